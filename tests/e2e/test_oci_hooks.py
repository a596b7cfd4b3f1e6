"""OCI hooks (oci-hooks(5)) from a daemon's hooks_dir, run by the real runc: a hook script
appends "<tag> <state JSON>" (runc hands hooks the container's state on stdin) to a log. One
file per stage shows every stage runs, in order, with the container's id, pid and bundle
(poststop at RemoveContainer, when runc deletes the container); `when.annotations` and
`when.commands` hooks fire only for the containers they match; a file in the later directory
masks a broken one of the same name in the earlier; a broken file is warned about once and
fails no container; a file written while the daemon runs is used by the next container."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cri.api import api_pb2
from tests.e2e.containers import Pod, new_pod, remove_pod, serving
from tests.e2e.helpers import Daemon, need_root

pytestmark = [pytest.mark.e2e, pytest.mark.node]

STAGES = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
          "poststop"]
# What runc 1.1 reports as the container's status to each stage.
STATUS = {"prestart": {"creating"}, "createRuntime": {"creating"},
          "createContainer": {"creating"}, "startContainer": {"created"},
          # runc 1.1 runs poststart as soon as `runc start` released the container's init,
          # which may not have exec'd the command yet.
          "poststart": {"created", "running"}, "poststop": {"stopped"}}
STAGES_KEY = "pycri.test/stages"  # containers that want the per-stage hooks
MARK_KEY = "pycri.test/mark"


@dataclass
class Hooked:
    daemon: Daemon
    usr: Path  # the earlier hooks directory
    etc: Path  # the later one
    run: Path  # the hook script and its log; mounted at the same path in stage containers
    script: Path

    @property
    def log(self) -> Path:
        return self.run / "hooks.log"

    def write(self, where: Path, name: str, tag: str, when: dict[str, Any],
              stages: list[str], **hook: Any) -> None:
        (where / name).write_text(json.dumps({
            "version": "1.0.0",
            # Hooks get no environment but their own: PATH for the script's cat.
            "hook": {"path": str(self.script), "args": [self.script.name, tag],
                     "env": ["PATH=/usr/bin:/bin"], **hook},
            "when": when, "stages": stages}))

    def entries(self, ctr_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(tag, state) of every hook run for container ``ctr_id``, in the order they ran."""
        out = []
        text = self.log.read_text() if self.log.exists() else ""
        for line in text.splitlines():
            tag, _, state = line.partition(" ")
            parsed = json.loads(state)
            if parsed["id"] == ctr_id:
                out.append((tag, parsed))
        return out

    def tags(self, ctr_id: str) -> list[str]:
        return [tag for tag, _ in self.entries(ctr_id)]


@pytest.fixture(scope="module")
def hooked() -> Iterator[Hooked]:
    need_root()
    d = Daemon.new("hooks")
    h = Hooked(d, d.base / "hooks-usr", d.base / "hooks-etc", d.base / "hooks-run",
               d.base / "hooks-run" / "record")
    for p in (h.usr, h.etc, h.run):
        p.mkdir()
    h.script.write_text("#!/bin/sh\n"
                        "state=$(cat)\n"
                        f"printf '%s %s\\n' \"$1\" \"$state\" >> {h.log}\n")
    h.script.chmod(0o755)
    dropin = Path(f"{d.config_path}.d")
    dropin.mkdir()
    (dropin / "hooks.conf").write_text(
        f'[pycri.runtime]\nhooks_dir = ["{h.usr}", "{h.etc}"]\n')
    # One file per stage (a hook entry does not learn its stage), for containers that ask
    # with an annotation and mount the script's dir: startContainer hooks run inside the
    # container, where the path must exist too.
    for i, stage in enumerate(STAGES):
        h.write(h.etc, f"0{i}-{stage}.json", stage,
                {"annotations": {f"^{STAGES_KEY}$": "^on$"}, "hasBindMounts": True},
                [stage], timeout=30)
    # The vendor's file is broken; the admin's file of the same name masks it.
    (h.usr / "20-marked.json").write_text('{"version": "1.0.0"}')
    h.write(h.etc, "20-marked.json", "marked",
            {"annotations": {f"^{MARK_KEY.replace('.', '[.]')}$": "^yes"}}, ["prestart"])
    (h.etc / "90-broken.json").write_text('{"version": "1.0.0", "hook": {"path": "/bin/sh"}, '
                                          '"when": {"always": true}, "stages": ["prestop"]}')
    with serving(d):
        yield h


def _run(pod: Pod, name: str, command: list[str], annotations: dict[str, str] | None = None,
         **kw: object) -> str:
    cfg = pod.container_config(name, command, **kw)
    cfg.annotations.update(annotations or {})
    ctr = pod.create(cfg)
    pod.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=60)
    return ctr


def _info(pod: Pod, ctr_id: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(pod.status(ctr_id, verbose=True).info["info"])
    return info


def test_every_stage_runs_in_order_with_the_container_s_state(
        hooked: Hooked, tmp_path: Path) -> None:
    d = hooked.daemon
    pod = new_pod(d, tmp_path)
    try:
        mount = api_pb2.Mount(container_path=str(hooked.run), host_path=str(hooked.run))
        ctr = _run(pod, "staged", ["sleep", "600"], {STAGES_KEY: "on"}, mounts=[mount])
        info = _info(pod, ctr)
        # The spec runc got has one entry per stage, from the hook files.
        hooks = info["runtimeSpec"]["hooks"]
        assert {s: [e["args"] for e in hooks[s]] for s in STAGES} == \
            {s: [["record", s]] for s in STAGES}
        assert hooks["prestart"][0]["timeout"] == 30
        bundle = info["bundle"]
        before_stop = hooked.entries(ctr)
        # startContainer runs in the container once `runc start` released it, and runc 1.1
        # runs poststart meanwhile: those two come in either order.
        tags = [t for t, _ in before_stop]
        assert tags[:3] == STAGES[:3] and sorted(tags[3:]) == sorted(STAGES[3:5]), tags
        for tag, state in before_stop:
            assert state["bundle"] == bundle and state["status"] in STATUS[tag], (tag, state)
            assert state["annotations"][STAGES_KEY] == "on"
            if tag in ("prestart", "createRuntime", "poststart"):  # run on the host
                assert state["pid"] == info["pid"], (tag, state)
            else:  # run in the container's namespaces, with its pid there
                assert state["pid"] > 0, (tag, state)
        pod.stop(ctr)
        assert hooked.tags(ctr) == tags  # poststop is runc delete's
        pod.remove_container(ctr)
        assert hooked.tags(ctr) == [*tags, "poststop"]
        state = hooked.entries(ctr)[-1][1]
        assert state["bundle"] == bundle and state["status"] in STATUS["poststop"], state
        # Nothing of the container is left: no runc state, no bundle.
        assert not (d.runroot / "runc" / ctr).exists()
        assert not Path(bundle).exists()
    finally:
        remove_pod(pod)


def test_annotation_and_command_hooks_fire_only_where_they_match(
        hooked: Hooked, tmp_path: Path) -> None:
    d = hooked.daemon
    # Written while the daemon runs: the next CreateContainer reads it.
    hooked.write(hooked.usr, "30-sleepers.json", "sleeper", {"commands": ["(^|/)sleep$"]},
                 ["poststart"])
    pod = new_pod(d, tmp_path)
    marked_pod = new_pod(d, tmp_path / "marked", annotations={MARK_KEY: "yes"})
    try:
        marked = _run(pod, "marked", ["sh", "-c", "sleep 600"], {MARK_KEY: "yes!"})
        sleeper = _run(pod, "sleeper", ["sleep", "600"], {MARK_KEY: "no"})
        plain = _run(pod, "plain", ["/bin/sleep", "600"])
        # A pod annotation counts as CRI-O counts it, though no handler lets it into the spec.
        by_pod = marked_pod.run("by-pod", ["sh", "-c", "sleep 600"])
        assert hooked.tags(marked) == ["marked"]
        assert hooked.tags(sleeper) == ["sleeper"]
        assert hooked.tags(plain) == ["sleeper"]
        assert hooked.tags(by_pod) == ["marked"]
        assert MARK_KEY not in _info(marked_pod, by_pod)["runtimeSpec"]["annotations"]
        # The infra containers get no hooks, not even from a pod annotation.
        assert hooked.tags(pod.id) == [] and hooked.tags(marked_pod.id) == []
    finally:
        remove_pod(pod)
        remove_pod(marked_pod)
        (hooked.usr / "30-sleepers.json").unlink()


def test_broken_files_are_warned_about_once_and_fail_nothing(
        hooked: Hooked, tmp_path: Path) -> None:
    d = hooked.daemon
    pod = new_pod(d, tmp_path)
    try:
        for i in range(2):
            ctr = pod.run(f"c{i}", ["sleep", "600"])
            assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING
        log = d.log.read_text()
        broken = hooked.etc / "90-broken.json"
        assert log.count(f"OCI hook file {broken} skipped: unknown stage 'prestop'") == 1, log
        # The masked vendor file is not even read.
        assert str(hooked.usr / "20-marked.json") not in log
    finally:
        remove_pod(pod)
