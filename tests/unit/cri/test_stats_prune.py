"""The stats caches (CPU samples for usage_nano_cores, writable-layer sizes) hold an entry per
live container and pod only: nothing of a removed container stays, even when a stats worker was
measuring it while it was removed, and a pod's new sandbox keeps the cgroup sample it shares
with the old one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cri.api import api_pb2
from cri.config import PycriConfig
from cri.runtime import metrics, stats
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerMeta, ContainerState, ContainerStatus
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus
from sandbox.cgroups.stats import CgroupStats
from sandbox.diskusage import UsageCache

POD_CGROUP = "/kubepods/podu1"


def _pod(rt: Runtime, pod_id: str) -> Sandbox:
    meta = SandboxMeta(id=pod_id, name=f"k8s_POD_web_ns_u1_{pod_id[0]}", runtime_handler="",
                       created_at=1, run_dir="/nonexistent", netns_path="",
                       cgroup_parent=POD_CGROUP, cgroup_created=False, hostname="web",
                       shm_path="", infra_id=pod_id)
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", uid="u1", namespace="ns"))
    pod = Sandbox(meta, config, SandboxStatus(state=SandboxState.READY, pid=0))
    rt.sandboxes.begin(pod)
    rt.sandboxes.commit(pod)
    return pod


def _ctr(rt: Runtime, pod: Sandbox, ctr_id: str) -> Container:
    meta = ContainerMeta(id=ctr_id, name=f"k8s_app_web_ns_u1_{ctr_id[0]}", pod_id=pod.id,
                         created_at=1, image="busybox", image_id="sha256:ab",
                         image_ref="sha256:ab", chain_ids=[], log_path="",
                         cgroup_path=f"{POD_CGROUP}/pycri-{ctr_id}", stop_signal=15, uid=0, gid=0,
                         additional_gids=[], username="", pid_namespace="container")
    ctr = Container(meta, api_pb2.ContainerConfig(), ContainerStatus(), rt.container_root / ctr_id)
    rt.containers.begin(ctr)
    ctr.status.state = ContainerState.RUNNING
    ctr.upper.mkdir(parents=True)
    rt.containers.commit(ctr)
    return ctr


class _Gate:
    """Holds the first cgroup read or layer walk of a container until released, so the test
    can remove the container while a stats worker is measuring it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pause(self) -> None:
        self.entered.set()
        assert self.release.wait(10)

    def read_stats(self, path: str) -> CgroupStats:
        if "/pycri-" in path:
            self.pause()
        return CgroupStats(timestamp_ns=time.time_ns(), cpu_usage_ns=1000)

    def walk(self, path: Path) -> tuple[int, int]:
        self.pause()
        return 4096, 1


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> _Gate:
    g = _Gate()
    # Every cgroup reads as present: the subject is what is kept, not the kernel's figures.
    monkeypatch.setattr(stats, "read_stats", g.read_stats)
    return g


@pytest.fixture
def rt(tmp_path: Path, gate: _Gate) -> Runtime:
    runtime = Runtime(PycriConfig(root=str(tmp_path / "root"), runroot=str(tmp_path / "run")))
    runtime.layer_usage = UsageCache(walk=gate.walk)
    return runtime


CALLS: dict[str, Callable[[Runtime, Container], Awaitable[object]]] = {
    "ContainerStats": lambda rt, c: stats.container_stats(rt, c.id),
    "ListContainerStats": lambda rt, c: stats.list_container_stats(rt, None),
    "PodSandboxStats": lambda rt, c: stats.pod_sandbox_stats(rt, c.meta.pod_id),
    "ListPodSandboxStats": lambda rt, c: stats.list_pod_sandbox_stats(rt, None),
    "ListPodSandboxMetrics": lambda rt, c: metrics.list_pod_sandbox_metrics(rt),
}


@pytest.mark.parametrize("rpc", sorted(CALLS))
def test_a_container_removed_while_measured_leaves_nothing_cached(rt: Runtime, gate: _Gate,
                                                                  rpc: str) -> None:
    pod = _pod(rt, "p" * 64)
    ctr = _ctr(rt, pod, "c" * 64)

    async def scenario() -> None:
        call = asyncio.ensure_future(CALLS[rpc](rt, ctr))
        await asyncio.to_thread(gate.entered.wait, 10)
        rt.containers.delete(ctr)  # what RemoveContainer does once its resources are gone
        rt.prune_stats()
        gate.release.set()
        await call

    asyncio.run(scenario())
    assert ctr.meta.cgroup_path not in rt.cpu_rates
    assert len(rt.layer_usage) == 0


def test_live_entries_stay_and_a_new_sandbox_keeps_the_pod_sample(rt: Runtime,
                                                                  gate: _Gate) -> None:
    gate.release.set()
    old = _pod(rt, "a" * 64)
    new = _pod(rt, "b" * 64)  # the kubelet's new sandbox of the same pod, same pod cgroup
    ctr = _ctr(rt, new, "c" * 64)
    asyncio.run(stats.list_pod_sandbox_stats(rt, None))
    assert set(rt.cpu_rates) == {POD_CGROUP, ctr.meta.cgroup_path}
    assert len(rt.layer_usage) == 1

    rt.sandboxes.delete(old)
    rt.prune_stats()
    assert set(rt.cpu_rates) == {POD_CGROUP, ctr.meta.cgroup_path}
    assert len(rt.layer_usage) == 1

    rt.containers.delete(ctr)
    rt.sandboxes.delete(new)
    rt.prune_stats()
    assert rt.cpu_rates == {}
    assert len(rt.layer_usage) == 0
