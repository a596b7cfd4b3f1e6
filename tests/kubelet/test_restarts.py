"""Restarting the kubelet, and restarting pycri under a running kubelet (SIGTERM and kill -9),
must not restart any container: same sandbox, same container ids, restart counts unchanged.
The kubelet is known to drive pycri again when its exec readiness probe (ExecSync through
pycri) runs again: each run adds a line to a file on the host."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import V1ExecAction, V1HostPathVolumeSource, V1Pod, V1Probe, V1Volume, V1VolumeMount

from cri.api import api_pb2
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import Kubelet
from tests.kubelet.pods import (
    container,
    cri_containers,
    cri_sandboxes,
    ctr_status,
    pod,
    pod_ip,
    poll,
    ready,
    running,
    wait_pod,
)

pytestmark = pytest.mark.kubelet
NAMES = ("one", "two")


@dataclass(frozen=True)
class Seen:
    """What must not change across a restart."""

    sandboxes: tuple[str, ...]
    containers: tuple[tuple[str, str, int], ...]  # (name, CRI id, attempt)
    statuses: tuple[tuple[str, str, int], ...]  # (name, kubelet's container id, restartCount)


@pytest.fixture(scope="module")
def steady(node: Node) -> Iterator[tuple[V1Pod, Path]]:
    node.kubelet.ensure()
    probes = probes_dir(node.kubelet)
    probes.mkdir(exist_ok=True)
    mount = V1VolumeMount(name="probes", mount_path="/probes")
    probe = V1Probe(_exec=V1ExecAction(command=["sh", "-c", "echo ran >> /probes/runs"]),
                    period_seconds=1, failure_threshold=1)
    # An init container too: a kubelet that finds it gone (or pycri that forgot it after a
    # kill -9) would run it again before the app, and write its line again.
    init = container("init", ["sh", "-c", "echo init >> /probes/init"], volume_mounts=[mount])
    p = pod("steady", *(container(n, ["sleep", "1000"], volume_mounts=[mount]) for n in NAMES),
            init_containers=[init],
            volumes=[V1Volume(name="probes", host_path=V1HostPathVolumeSource(path=str(probes)))])
    p.spec.containers[0].readiness_probe = probe
    pods = StaticPods(node)
    pods.add(p)
    try:
        yield p, probes / "runs"
    finally:
        pods.remove_all()


def seen(node: Node, kubelet: Kubelet, p: V1Pod) -> Seen:
    got = wait_pod(kubelet, "steady", "running and ready",
                   lambda p: ready(p) and all(running(p, n) for n in NAMES))
    uid = p.metadata.uid
    statuses = tuple((n, st.container_id, st.restart_count)
                     for n in NAMES if (st := ctr_status(got, n)) is not None)
    init = ctr_status(got, "init", init=True)
    assert init is not None and init.state.terminated is not None
    statuses += (("init", init.container_id, init.restart_count),)
    assert (probes_dir(kubelet) / "init").read_text() == "init\n"
    return Seen(tuple(s.id for s in cri_sandboxes(node.daemon, uid)),
                tuple((c.metadata.name, c.id, c.metadata.attempt)
                      for c in cri_containers(node.daemon, uid)), statuses)


def probes_dir(kubelet: Kubelet) -> Path:
    return kubelet.base / "probes"


def probe_runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def wait_for_probes_after(runs: Path, before: int) -> None:
    """Three more probe runs: the kubelet has synced the pod several times since."""
    poll("the readiness probe to run again through pycri", lambda: probe_runs(runs) >= before + 3)


def test_kubelet_restart_restarts_no_container(node: Node, steady: tuple[V1Pod, Path]) -> None:
    p, runs = steady
    k = node.kubelet
    before = seen(node, k, p)
    k.stop()
    stopped_at = probe_runs(runs)
    k.start(**k.overrides)
    wait_for_probes_after(runs, stopped_at)
    assert seen(node, k, p) == before


@pytest.mark.parametrize("kill", [False, True], ids=["SIGTERM", "SIGKILL"])
def test_pycri_restart_restarts_no_container(node: Node, steady: tuple[V1Pod, Path],
                                            kill: bool) -> None:
    p, runs = steady
    k = node.kubelet
    before = seen(node, k, p)
    node.daemon.restart(kill=kill)
    wait_for_probes_after(runs, probe_runs(runs))
    assert seen(node, k, p) == before
    assert k.proc is not None and k.proc.poll() is None


def sandbox_pid(node: Node, sandbox_id: str) -> int:
    resp = node.daemon.runtime().PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=10)
    return int(json.loads(resp.info["info"])["pid"])


@pytest.mark.parametrize("gates", [{}, {"EventedPLEG": True}], ids=["generic", "evented"])
def test_dead_pod_infra_makes_the_kubelet_recreate_the_pod(node: Node, static_pods: StaticPods,
                                                           gates: dict[str, bool]) -> None:
    """The pod's infra process dies (OOM, a stray kill): pycri reports the sandbox not ready,
    and the kubelet kills the pod's containers and starts it again in a new sandbox. Under
    the Evented PLEG it learns of it from the sandbox's STOPPED event alone."""
    k = node.kubelet
    k.ensure(**({"featureGates": gates} if gates else {}))
    p = pod("infra", container("app", ["sleep", "1000"]))
    static_pods.add(p)
    wait_pod(k, "infra", "running", lambda p: running(p, "app"))
    uid = p.metadata.uid
    [old] = cri_sandboxes(node.daemon, uid)
    [first] = cri_containers(node.daemon, uid, "app")
    os.kill(sandbox_pid(node, old.id), signal.SIGKILL)
    poll("a new ready sandbox for the pod", lambda: any(
        s.id != old.id and s.state == api_pb2.PodSandboxState.SANDBOX_READY
        for s in cri_sandboxes(node.daemon, uid)))
    got = wait_pod(k, "infra", "running in the new sandbox", lambda p: running(p, "app") and (
        ctr_status(p, "app").container_id != f"pycri://{first.id}"))  # type: ignore[union-attr]
    sandboxes = {s.id: s for s in cri_sandboxes(node.daemon, uid)}
    if old.id in sandboxes:  # until the kubelet's container GC (once a minute) removes it
        assert sandboxes[old.id].state == api_pb2.PodSandboxState.SANDBOX_NOTREADY
    new = next(s for s in sandboxes.values() if s.id != old.id)
    assert new.metadata.attempt == old.metadata.attempt + 1
    [now] = [c for c in cri_containers(node.daemon, uid, "app")
             if c.state == api_pb2.ContainerState.CONTAINER_RUNNING]
    assert now.pod_sandbox_id == new.id
    assert got.status.pod_ip == pod_ip(node.daemon, new.id)


def test_container_that_exits_while_pycri_is_down(node: Node, static_pods: StaticPods) -> None:
    """Killed pycri misses the exit: conmon records it, the restarted pycri reads it, and the
    kubelet sees the exit code and starts the container again."""
    k = node.kubelet
    k.ensure()
    flags = k.base / f"flags-{uuid.uuid4().hex[:6]}"
    flags.mkdir()
    mount = V1VolumeMount(name="flags", mount_path="/flags")
    cmd = "[ -e /flags/exited ] && exec sleep 1000; until [ -e /flags/go ]; do sleep 0.1; done; " \
          "touch /flags/exited; exit 5"
    p = pod("exitdown", container("app", ["sh", "-c", cmd], volume_mounts=[mount]),
            volumes=[V1Volume(name="flags", host_path=V1HostPathVolumeSource(path=str(flags)))])
    static_pods.add(p)
    wait_pod(k, "exitdown", "running", lambda p: running(p, "app"))
    node.daemon.stop(kill=True)
    try:
        (flags / "go").touch()
        poll("the container to exit", lambda: (flags / "exited").exists())
    finally:
        node.daemon.start()
    got = wait_pod(k, "exitdown", "started again", lambda p: running(p, "app") and (
        ctr_status(p, "app").restart_count == 1))  # type: ignore[union-attr]
    st = ctr_status(got, "app")
    assert st is not None and st.last_state.terminated is not None
    assert (st.last_state.terminated.exit_code, st.last_state.terminated.reason) == (5, "Error")
