"""RuntimeClass handlers: a daemon with a second handler, "recorder", whose runtime_path is a
wrapper that writes down every command line it gets and then runs runc. A pod that names it
runs its infra and every container through the wrapper (create by conmon; start, kill and
delete by pycri), with that handler's own state directory, also after a kill -9 restart; a pod
that names no handler never reaches it; Status lists it; its allowed pod annotations reach the
OCI specs and others do not; an unknown handler is refused naming the configured ones."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import new_pod, remove_pod, serving
from tests.e2e.helpers import REPO, Daemon, need_root

pytestmark = [pytest.mark.e2e, pytest.mark.node]

HANDLER = "recorder"


class Recorded:
    """The daemon, and the command lines its recorder handler's runtime got."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.log = daemon.base / "recorder.log"
        self.wrapper = daemon.base / "recorder-runtime"
        runc = shutil.which("runc")
        assert runc
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$*\" >> {shlex.quote(str(self.log))}\n"
            f"exec {shlex.quote(runc)} \"$@\"\n")
        self.wrapper.chmod(0o755)
        with daemon.config_path.open("a") as f:
            f.write(f'[pycri.runtime.handlers.{HANDLER}]\nruntime_path = "{self.wrapper}"\n'
                    'allowed_annotations = ["example.com/*"]\n')

    def calls(self) -> list[list[str]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split() for line in text.splitlines()]

    def verbs_of(self, ident: str) -> set[str]:
        """The runc commands run for container ``ident`` (with the handler's own root)."""
        root = f"--root={self.daemon.runroot / HANDLER}"
        return {verb for argv in self.calls() if ident in argv and root in argv
                for verb in ("create", "start", "kill", "delete", "state") if verb in argv}


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    need_root()
    d = Daemon.new("handlers")
    rec = Recorded(d)
    with serving(d):
        yield rec


def _runc_state(d: Daemon, ident: str) -> dict[str, object]:
    out = subprocess.run(["runc", f"--root={d.runroot / HANDLER}", "state", ident],
                         capture_output=True, text=True, check=True).stdout
    state: dict[str, object] = json.loads(out)
    return state


def test_status_lists_the_handlers_with_their_features(recorded: Recorded) -> None:
    resp = recorded.daemon.runtime().Status(api_pb2.StatusRequest(verbose=True), timeout=10)
    handlers = {h.name: h.features for h in resp.runtime_handlers}
    assert set(handlers) == {"", "runc", HANDLER}
    # The features are asked of each handler's own runtime (here runc behind the wrapper).
    assert ["features"] in recorded.calls()
    assert handlers[HANDLER] == handlers["runc"] == handlers[""]
    assert not handlers[HANDLER].user_namespaces
    info = json.loads(resp.info["config"])
    assert info["runtimeHandlers"][HANDLER]["runtimePath"] == str(recorded.wrapper)


def test_a_pod_of_the_handler_runs_everything_through_its_runtime(
        recorded: Recorded, tmp_path: Path) -> None:
    d = recorded.daemon
    pod = new_pod(d, tmp_path, runtime_handler=HANDLER,
                  annotations={"example.com/gpu": "yes", "other.org/x": "no"})
    removed = False
    try:
        status = d.runtime().PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod.id), timeout=10).status
        assert status.runtime_handler == HANDLER
        ctr = pod.run("sleeper", ["sleep", "600"])
        # Both live in the handler's state dir, not runc's.
        assert (d.runroot / HANDLER / ctr).is_dir() and (d.runroot / HANDLER / pod.id).is_dir()
        assert not (d.runroot / "runc" / ctr).exists()
        for ident in (pod.id, ctr):
            annotations = _runc_state(d, ident)["annotations"]
            assert isinstance(annotations, dict)
            assert annotations.get("example.com/gpu") == "yes", annotations
            assert "other.org/x" not in annotations
        # A restart finds the pod and its container through the handler they recorded.
        d.restart(kill=True)
        state = pod.status(ctr).status.state
        assert state == api_pb2.ContainerState.CONTAINER_RUNNING
        pod.stop(ctr)
        pod.remove_container(ctr)
        remove_pod(pod)
        removed = True
        for ident in (pod.id, ctr):
            verbs = recorded.verbs_of(ident)
            assert {"create", "start", "kill", "delete"} <= verbs, (ident, verbs)
    finally:
        if not removed:
            remove_pod(pod)


def test_a_pod_naming_no_handler_does_not_use_the_recorder(
        recorded: Recorded, tmp_path: Path) -> None:
    pod = new_pod(recorded.daemon, tmp_path)
    try:
        ctr = pod.run("plain", ["sleep", "600"])
        assert (recorded.daemon.runroot / "runc" / ctr).is_dir()
        assert not [argv for argv in recorded.calls() if ctr in argv or pod.id in argv]
    finally:
        remove_pod(pod)


def test_an_unknown_handler_is_refused_naming_the_configured_ones(
        recorded: Recorded, tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError) as err:
        new_pod(recorded.daemon, tmp_path, runtime_handler="kata")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert "'kata'" in details and "runc" in details and HANDLER in details


def test_pycri_config_documents_the_handler(recorded: Recorded) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cri", "config", "--config", str(recorded.daemon.config_path)],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    handlers = tomllib.loads(out)["pycri"]["runtime"]["handlers"]
    assert handlers[HANDLER]["runtime_path"] == str(recorded.wrapper)
    assert set(handlers[HANDLER]) == {"runtime_path", "runtime_root", "monitor_path",
                                      "allowed_annotations", "privileged_without_host_devices"}
    assert "# [pycri.runtime.handlers.NAME]:" in out
