"""Restart recovery of containers: the daemon dies (kill -9) or is stopped (SIGTERM) and comes
back. conmon keeps every container going meanwhile; afterwards the daemon must report what
really happened: running containers still running, exits that happened while it was down with
their real code and time, created containers still startable, and pods removable without
leaving anything behind."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from sandbox import cgroups
from tests.e2e.containers import (
    Pod,
    conmon_pids,
    container_pid,
    new_pod,
    pull,
    push_configured_image,
    remove_pod,
    wait_for_log,
    wait_until,
)
from tests.e2e.helpers import Daemon
from tests.fixtures.images import runnable_busybox_layers
from tests.fixtures.registry import LocalRegistry

# Fixtures of conftest.py: registry and image (one per module, images removed after it), pod.
pytestmark = pytest.mark.e2e
S = api_pb2.ContainerState

UNTIL_GO = "while [ ! -e /go ]; do sleep 0.05; done"
TICKER = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done"
RESTARTS = pytest.mark.parametrize("kill", [True, False], ids=["kill-9", "sigterm"])



def ticks(pod: Pod, ctr: str) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in pod.log(ctr).splitlines()
            if " stdout F tick " in line]


def alive(pid: int) -> bool:
    """Running (not a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@RESTARTS
def test_running_container_keeps_running_across_a_restart(pod: Pod, kill: bool) -> None:
    ctr = pod.run("ticker", ["sh", "-c", TICKER])
    pid = container_pid(pod, ctr)
    wait_for_log(pod, ctr, "tick 2")
    # Read once it ticks: right after StartContainer it may still be "runc init" (runc start
    # returns before the container's process has exec'd).
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    pod.daemon.restart(kill=kill)
    last_before = max(ticks(pod, ctr))
    # The same process, untouched.
    assert alive(pid) and Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
    st = pod.status(ctr).status
    assert st.state == S.CONTAINER_RUNNING and st.exit_code == 0 and st.finished_at == 0
    assert container_pid(pod, ctr) == pid
    listed = pod.rt.ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(id=ctr)), timeout=10).containers
    assert [(c.id, c.state) for c in listed] == [(ctr, S.CONTAINER_RUNNING)]
    res = pod.exec(ctr, ["sh", "-c", "echo still here"])
    assert (res.exit_code, res.stdout) == (0, b"still here\n")
    wait_until("new log lines", lambda: max(ticks(pod, ctr)) >= last_before + 3)
    # The daemon follows the container again: a stop is seen through to its exit.
    pod.stop(ctr, timeout=0)
    st = pod.status(ctr).status
    assert (st.state, st.exit_code) == (S.CONTAINER_EXITED, 137)
    assert not alive(pid)


@RESTARTS
def test_exit_while_the_daemon_is_down_is_recorded(pod: Pod, kill: bool) -> None:
    ctr = pod.run("leaver", ["sh", "-c", f"{UNTIL_GO}; exit 42"])
    pid = container_pid(pod, ctr)
    started_at = pod.status(ctr).status.started_at
    pod.daemon.stop(kill=kill)
    try:
        # Let the container go (through its own root, as seen from the host), and wait until
        # conmon has recorded the exit and left.
        Path(f"/proc/{pid}/root/go").touch()
        wait_until("the container to exit", lambda: not alive(pid))
        wait_until("its conmon to exit", lambda: not conmon_pids(ctr))
        down_until = time.time_ns()
    finally:
        pod.daemon.start()
    st = pod.wait_exit(ctr)
    assert (st.exit_code, st.reason) == (42, "Error")
    assert st.started_at == started_at
    # The exit's own time, not the time the daemon came back and noticed it.
    assert started_at <= st.finished_at <= down_until
    # Nothing to stop, and stopping is harmless.
    pod.stop(ctr, timeout=0)
    assert pod.status(ctr).status.exit_code == 42


def test_oom_kill_while_the_daemon_is_down_is_oomkilled(pod: Pod) -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    ctr = pod.run("hog", ["sh", "-c", f"{UNTIL_GO}; exec tail /dev/zero"], resources=res)
    pid = container_pid(pod, ctr)
    pod.daemon.stop(kill=True)
    try:
        Path(f"/proc/{pid}/root/go").touch()
        wait_until("the container to be OOM-killed", lambda: not alive(pid), timeout=120)
        wait_until("its conmon to exit", lambda: not conmon_pids(ctr))
    finally:
        pod.daemon.start()
    st = pod.wait_exit(ctr)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")


def test_recovered_container_is_still_managed(pod: Pod) -> None:
    """After a kill -9 the kubelet's other calls work on a container the daemon recovered:
    log rotation (conmon's ctl fifo), stats, a resize, an exec that times out."""
    ctr = pod.run("ticker", ["sh", "-c", TICKER])
    wait_for_log(pod, ctr, "tick 1")
    pod.daemon.restart(kill=True)
    log_path = Path(pod.status(ctr).status.log_path)
    rotated = log_path.with_name(log_path.name + ".1")
    log_path.rename(rotated)
    pod.rt.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=ctr), timeout=30)
    wait_until("ticks in the reopened log", lambda: " stdout F tick " in log_path.read_text())
    stats = pod.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=ctr),
                                  timeout=10).stats
    assert stats.cpu.usage_core_nano_seconds.value > 0
    assert stats.memory.working_set_bytes.value > 0
    pod.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=ctr, linux=api_pb2.LinuxContainerResources(memory_limit_in_bytes=48 << 20)),
        timeout=30)
    info = json.loads(pod.status(ctr, verbose=True).info["info"])
    memcg = Path("/sys/fs/cgroup/memory") / info["cgroupsPath"].lstrip("/")
    assert int((memcg / "memory.limit_in_bytes").read_text()) == 48 << 20
    with pytest.raises(grpc.RpcError) as err:
        pod.exec(ctr, ["sleep", "876543"], timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert b"876543" not in pod.exec(ctr, ["ps", "-o", "args"]).stdout


@RESTARTS
def test_created_container_survives_a_restart_and_starts(pod: Pod, kill: bool) -> None:
    ctr = pod.create(pod.container_config("later", ["sh", "-c", "echo hello; exit 5"]))
    pod.daemon.restart(kill=kill)
    st = pod.status(ctr).status
    assert st.state == S.CONTAINER_CREATED and st.started_at == 0
    pod.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=30)
    st = pod.wait_exit(ctr)
    assert (st.exit_code, st.reason) == (5, "Error") and st.started_at > 0
    assert "stdout F hello" in pod.log(ctr)


@RESTARTS
def test_stop_signals_are_kept_across_a_restart(pod: Pod, registry: LocalRegistry,
                                                kill: bool) -> None:
    """The image's stop signal and the CRI's are part of what the daemon reads back."""
    name = push_configured_image(registry, "restart-usr1", runnable_busybox_layers(),
                                 {"StopSignal": "SIGUSR1"})
    pull(pod.daemon, name)
    traps = ("trap 'exit 11' USR1; trap 'exit 12' USR2; trap 'exit 13' TERM; echo ready; "
             "while :; do sleep 0.1; done")
    spec = api_pb2.ImageSpec(image=name)
    by_image = pod.run("by-image", ["sh", "-c", traps], image=spec)
    by_cri = pod.run("by-cri", ["sh", "-c", traps], image=spec, stop_signal=api_pb2.Signal.SIGUSR2)
    for ctr in (by_image, by_cri):
        wait_for_log(pod, ctr, "ready")
    pod.daemon.restart(kill=kill)
    for ctr, code in ((by_image, 11), (by_cri, 12)):
        pod.stop(ctr, timeout=30)
        st = pod.status(ctr).status
        assert (st.state, st.exit_code) == (S.CONTAINER_EXITED, code)


def _host_procs_with(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@RESTARTS
def test_exec_in_flight_does_not_outlive_the_daemon(pod: Pod, kill: bool) -> None:
    """An exec probe running when the daemon goes away does not run on for ever: a graceful
    stop cancels it, a restart after kill -9 finds and kills what the dead daemon left."""
    ctr = pod.run("probed", ["sleep", "1000"])
    # An argument no other process on the host has (other test sessions may run this test).
    arg = f"{random.randrange(10**8, 10**9)}"
    failures: list[grpc.StatusCode] = []

    def probe() -> None:
        try:
            pod.exec(ctr, ["sleep", arg], timeout=2)
        except grpc.RpcError as exc:
            failures.append(exc.code())

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        wait_until("the exec'd command", lambda: _host_procs_with(arg))
        pod.daemon.restart(kill=kill)
    finally:
        thread.join(60)
    assert failures  # the call did not succeed: the daemon went away or the timeout struck
    wait_until("no exec'd command left", lambda: not _host_procs_with(arg), timeout=15)
    # Nor its scratch dir (process.json holds the container's environment).
    assert not list((pod.daemon.runroot / "exec").glob("pycri-exec-*"))
    assert arg.encode() not in pod.exec(ctr, ["ps", "-o", "args"]).stdout


def _mounted(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


@RESTARTS
def test_pod_removed_after_a_restart_leaves_nothing(daemon: Daemon, image: str, tmp_path: Path,
                                                     kill: bool) -> None:
    pod = new_pod(daemon, tmp_path)
    try:
        running = pod.run("running", ["sleep", "1000"])
        exited = pod.run("exited", ["true"])
        pod.wait_exit(exited)
        created = pod.create(pod.container_config("created", ["sleep", "1000"]))
        info = json.loads(pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=pod.id, verbose=True), timeout=10).info["info"])
        netns, cgroup_parent, infra_pid = info["netNamespacePath"], info["cgroupParent"], info["pid"]
        ip = pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod.id),
                                     timeout=10).status.network.ip
        pids = [infra_pid, container_pid(pod, running)]
        daemon.restart(kill=kill)
        status = pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod.id),
                                         timeout=10).status
        assert status.state == api_pb2.PodSandboxState.SANDBOX_READY and status.network.ip == ip
        assert {c.id: c.state for c in pod.rt.ListContainers(api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(pod_sandbox_id=pod.id)), timeout=10).containers} == {
            running: S.CONTAINER_RUNNING, exited: S.CONTAINER_EXITED, created: S.CONTAINER_CREATED}
    finally:
        remove_pod(pod)
    ids = [pod.id, running, exited, created]
    assert not [p for p in pids if alive(p)]
    assert not [i for i in ids if conmon_pids(i)]
    assert not [i for i in ids if _mounted(i)]
    assert not Path(netns).exists()
    hierarchies = Path("/sys/fs/cgroup").iterdir()
    assert not [h for h in hierarchies if (h / cgroup_parent.lstrip("/")).exists()]
    assert not [i for i in ids if (daemon.root / "containers" / i).exists()]
    assert not [i for i in ids if (daemon.root / "sandboxes" / i).exists()]
    assert not [p for p in daemon.ipam_dir.rglob(ip) if p.is_file()]
    assert pod.rt.ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(pod_sandbox_id=pod.id)), timeout=10).containers == []
    assert pod.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(
        filter=api_pb2.PodSandboxFilter(id=pod.id)), timeout=10).items == []


def service_hierarchy() -> Path:
    """Where a service manager tracks a service's processes: the cgroup2 tree (v2 host, or a
    hybrid host's unified mount is not it: systemd's own name=systemd hierarchy is)."""
    layout = cgroups.detect()
    if isinstance(layout, cgroups.V2Layout):
        return layout.root
    for h in layout.hierarchies:
        if h.path.name == "systemd":
            return h.path
    pids = layout.dir_of("pids")
    assert pids is not None, "no hierarchy to put a service in"
    return pids


def test_monitors_survive_a_service_stop_that_kills_the_daemon_cgroup(pod: Pod) -> None:
    """A service manager stops or restarts pycri by killing every process of its cgroup
    (systemd's default KillMode=control-group). Each conmon is moved into the configured
    conmon cgroup before it starts anything, so the containers keep their monitor: the log
    goes on while the daemon is gone and the exit is recorded after it is back."""
    daemon = pod.daemon
    assert daemon.proc is not None
    svc = service_hierarchy() / f"pycri-e2e-service-{daemon.tag}"
    svc.mkdir()
    try:
        (svc / "cgroup.procs").write_text(str(daemon.proc.pid))
        ctr = pod.run("ticker", ["sh", "-c", TICKER])
        pid = container_pid(pod, ctr)
        [monitor] = conmon_pids(ctr)
        assert monitor in cgroups.list_pids(daemon.conmon_cgroup, recursive=False)
        wait_for_log(pod, ctr, "tick 2")
        log = Path(pod.status(ctr).status.log_path)

        def ticked() -> int:
            return log.read_text().count(" stdout F tick ")

        # The service stop: SIGKILL to every process in the daemon's cgroup.
        for victim in (svc / "cgroup.procs").read_text().split():
            os.kill(int(victim), signal.SIGKILL)
        daemon.proc.wait(timeout=30)
        daemon.proc = None
        before = ticked()
        wait_until("log lines written while the daemon is gone", lambda: ticked() >= before + 2)
        assert alive(monitor) and alive(pid)
        daemon.start()
        pod.stop(ctr, timeout=0)
        st = pod.status(ctr).status
        assert (st.state, st.exit_code, st.reason) == (S.CONTAINER_EXITED, 137, "Error")
    finally:
        if daemon.proc is None:
            daemon.start()
        # Back to the hierarchy's root, so the test cgroup can go.
        for left in (svc / "cgroup.procs").read_text().split():
            (svc.parent / "cgroup.procs").write_text(left)
        svc.rmdir()
