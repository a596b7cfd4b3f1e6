"""NRI plugins against a real daemon: a Python plugin (tests/fixtures/nri_plugin.py, on pycri's
own ttrpc code) connects to the daemon's NRI socket and sees pods and containers come and go,
injects into them, updates them, refuses them, or hangs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api import api_pb2
from sandbox import cgroups
from tests.e2e.containers import Pod, create_refused, new_pod, remove_pod, wait_for_log, wait_until
from tests.e2e.helpers import REPO, Daemon

pytestmark = pytest.mark.node


class PluginProcess:
    def __init__(self, proc: subprocess.Popen[bytes], events: Path) -> None:
        self.proc, self.events = proc, events

    def received(self, method: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.events.read_text().splitlines()]
        return [e for e in lines if method is None or e["method"] == method]

    def methods(self) -> list[str]:
        return [e["method"] for e in self.received()]


@contextlib.contextmanager
def plugin(daemon: Daemon, tmp_path: Path, name: str, *args: str) -> Iterator[PluginProcess]:
    """The test plugin connected to the daemon and synchronized; stopped at the end."""
    events = tmp_path / f"{name}.events"
    events.touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.nri_plugin", "--socket", str(daemon.nri_socket),
         "--name", name, "--idx", "10", "--events", str(events), *args], cwd=REPO)
    p = PluginProcess(proc, events)
    try:
        # Synchronize is the last step of joining; a pod or container made from here on waits
        # until the plugin gets events (the daemon's sync gate).
        wait_until(f"plugin {name} synchronized", lambda: p.received("Synchronize"))
        yield p
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_plugin_sees_pod_and_container_lifecycles_in_order(daemon: Daemon, image: str,
                                                            tmp_path: Path) -> None:
    with plugin(daemon, tmp_path, "watcher") as p:
        pod = new_pod(daemon, tmp_path)
        try:
            ctr = pod.run("watched", ["sleep", "1000"])
            pod.stop(ctr, timeout=10)
            pod.remove_container(ctr)
        finally:
            remove_pod(pod)
        wait_until("RemovePodSandbox", lambda: p.received("RemovePodSandbox"))
        assert [m for m in p.methods() if m not in ("Configure", "Synchronize")] == [
            "RunPodSandbox", "CreateContainer", "PostCreateContainer", "StartContainer",
            "PostStartContainer", "StopContainer", "RemoveContainer", "StopPodSandbox",
            "RemovePodSandbox"]
        run = p.received("RunPodSandbox")[0]["request"]["pod"]
        md = pod.config.metadata
        assert (run["id"], run["name"], run["namespace"], run["uid"]) == (
            pod.id, md.name, md.namespace, md.uid)
        assert run["pid"] > 0 and run["ips"]  # the pod is complete when plugins see it
        created = p.received("CreateContainer")[0]["request"]["container"]
        assert (created["id"], created["name"], created["pod_sandbox_id"]) == (ctr, "watched",
                                                                              pod.id)
        assert created["args"] == ["sleep", "1000"]
        stopped = p.received("StopContainer")[0]["request"]["container"]
        assert stopped["state"] == "CONTAINER_STOPPED"


def test_a_plugin_injects_env_and_a_mount(daemon: Daemon, pod: Pod, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the host\n")
    with plugin(daemon, tmp_path, "injector", "--env", "NRI_INJECTED=yes",
                "--mount", f"{shared}:/nri") as p:
        ctr = pod.run("injected", ["sh", "-c", 'echo "env=$NRI_INJECTED"; cat /nri/hello; '
                                               "sleep 1000"])
        log = wait_for_log(pod, ctr, "from the host")
        assert "env=yes" in log
        # The next plugin (or a later event) sees the adjusted container.
        started = p.received("StartContainer")[0]["request"]["container"]
        assert "NRI_INJECTED=yes" in started["env"]
        assert any(m["destination"] == "/nri" for m in started["mounts"])


def _cpu_shares(pod: Pod, ctr: str) -> str:
    path = json.loads(pod.status(ctr, verbose=True).info["info"])["cgroupsPath"]
    for d in cgroups.pod_cgroup_dirs(path):
        for name in ("cpu.shares", "cpu.weight"):
            if (d / name).exists():
                return f"{name}={(d / name).read_text().strip()}"
    return ""


def test_a_plugin_updates_a_running_containers_cpu_shares(daemon: Daemon, pod: Pod,
                                                          tmp_path: Path) -> None:
    with plugin(daemon, tmp_path, "tuner", "--cpu-shares", "512"):
        ctr = pod.run("tuned", ["sleep", "1000"])
        # runc 1.1 maps shares onto a v2 cpu.weight linearly: 1 + (512-2)*9999/262142 = 20.
        wait_until("the plugin's cpu shares in the cgroup",
                   lambda: _cpu_shares(pod, ctr) in ("cpu.shares=512", "cpu.weight=20"))
        # The status follows once the update is done (`runc update` writes the cgroup first,
        # then the runtime records it): the update's end, not the cgroup write, is what a
        # client waits for.
        wait_until("the plugin's cpu shares in ContainerStatus",
                   lambda: pod.status(ctr).status.resources.linux.cpu_shares == 512)


def test_a_refused_create_fails_leaks_nothing_and_the_retry_works(daemon: Daemon, pod: Pod,
                                                                  tmp_path: Path) -> None:
    with plugin(daemon, tmp_path, "refuser", "--fail-create", "1") as p:
        cfg = pod.container_config("refused", ["sleep", "1000"])
        err = create_refused(pod, cfg)
        assert err.code() == grpc.StatusCode.UNKNOWN
        assert "10-refuser failed CreateContainer: induced CreateContainer failure" in \
            (err.details() or "")
        # Plugins hear of the failed container going (they may have reserved something).
        assert p.methods()[-2:] == ["StopContainer", "RemoveContainer"]
        ctr = pod.create(cfg)
        assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_CREATED
        assert "StartContainer" not in p.methods()


def test_a_hung_plugin_is_cut_off_and_the_daemon_stays_responsive(daemon: Daemon, pod: Pod,
                                                                  tmp_path: Path) -> None:
    with plugin(daemon, tmp_path, "hung", "--hang", "CreateContainer") as p:
        created: list[str] = []
        creating = threading.Thread(target=lambda: created.append(
            pod.create(pod.container_config("patient", ["sleep", "1000"]))))
        creating.start()
        try:
            wait_until("the plugin to hold CreateContainer", lambda: p.received("CreateContainer"))
            # While the plugin holds the create, the daemon answers other calls.
            pods = daemon.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30)
            assert pod.id in [item.id for item in pods.items]
        finally:
            creating.join(timeout=120)
        # After plugin_request_timeout the plugin is dropped and the create goes on.
        assert len(created) == 1
        assert pod.status(created[0]).status.state == api_pb2.ContainerState.CONTAINER_CREATED
        assert p.proc.wait(timeout=30) == 0  # its connection was closed: it ended
