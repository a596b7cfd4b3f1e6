"""ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats, from the cgroups.

The kubelet asks every few seconds for every container, so a list reads each cgroup once, in a
worker thread (sysfs reads are cheap but still syscalls). usage_nano_cores needs two samples:
the previous one of each cgroup is kept (and dropped when the container or pod goes, or when a
worker that measured it returns to find it gone).
"""

from __future__ import annotations

import time

from cri.api import api_pb2
from cri.runtime.daemon import Runtime
from cri.store.container import Container
from cri.store.sandbox import Sandbox
from sandbox import diskusage
from sandbox.cgroups.stats import CgroupStats, CpuRate, read_stats
from sandbox.netstats import IfaceStats, default_interface, read_net_dev


def _u64(value: int | None) -> api_pb2.UInt64Value | None:
    return None if value is None else api_pb2.UInt64Value(value=max(0, value))


def _rate(rt: Runtime, path: str, stats: CgroupStats) -> int | None:
    return rt.cpu_rates.setdefault(path, CpuRate()).update(stats)


def _cpu(stats: CgroupStats | None, rate: int | None, now: int) -> api_pb2.CpuUsage:
    if stats is None:
        return api_pb2.CpuUsage(timestamp=now)
    return api_pb2.CpuUsage(timestamp=stats.timestamp_ns,
                            usage_core_nano_seconds=_u64(stats.cpu_usage_ns),
                            usage_nano_cores=_u64(rate))


def _memory(stats: CgroupStats | None, now: int) -> api_pb2.MemoryUsage:
    if stats is None:
        return api_pb2.MemoryUsage(timestamp=now)
    available = None
    if stats.memory_limit is not None and stats.memory_working_set is not None:
        available = stats.memory_limit - stats.memory_working_set
    return api_pb2.MemoryUsage(
        timestamp=stats.timestamp_ns,
        working_set_bytes=_u64(stats.memory_working_set),
        available_bytes=_u64(available),
        usage_bytes=_u64(stats.memory_usage),
        rss_bytes=_u64(stats.memory_rss),
        page_faults=_u64(stats.page_faults),
        major_page_faults=_u64(stats.major_page_faults),
    )


def _writable_layer(rt: Runtime, ctr: Container, now: int) -> diskusage.Measured:
    try:
        return rt.layer_usage.usage(ctr.id, ctr.upper)
    except FileNotFoundError:  # not made yet, or the container was removed while we read
        return diskusage.Measured(0, 0, now)


def _container_stats(rt: Runtime, ctr: Container) -> api_pb2.ContainerStats:
    now = time.time_ns()
    stats = read_stats(ctr.meta.cgroup_path) if ctr.running else None
    rate = _rate(rt, ctr.meta.cgroup_path, stats) if stats is not None else None
    layer = _writable_layer(rt, ctr, now)
    return api_pb2.ContainerStats(
        attributes=api_pb2.ContainerAttributes(id=ctr.id, metadata=ctr.config.metadata,
                                               labels=ctr.config.labels,
                                               annotations=ctr.config.annotations),
        cpu=_cpu(stats, rate, now),
        memory=_memory(stats, now),
        writable_layer=api_pb2.FilesystemUsage(
            timestamp=layer.at_ns,
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(rt.container_root)),
            used_bytes=api_pb2.UInt64Value(value=layer.used_bytes),
            inodes_used=api_pb2.UInt64Value(value=layer.inodes)),
        swap=api_pb2.SwapUsage(timestamp=now, swap_usage_bytes=_u64(
            stats.memory_swap if stats is not None else None)),
    )


async def container_stats(rt: Runtime, ctr_id: str) -> api_pb2.ContainerStats:
    ctr = rt.containers.lookup(ctr_id)
    return await rt.stats_worker(lambda: _container_stats(rt, ctr))


def _ctr_matches(ctr: Container, f: api_pb2.ContainerStatsFilter | None) -> bool:
    if f is None:
        return True
    if f.id and not ctr.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not ctr.meta.pod_id.startswith(f.pod_sandbox_id):
        return False
    return all(ctr.config.labels.get(k) == v for k, v in f.label_selector.items())


async def list_container_stats(rt: Runtime, f: api_pb2.ContainerStatsFilter | None
                               ) -> list[api_pb2.ContainerStats]:
    ctrs = [c for c in rt.containers if _ctr_matches(c, f)]
    stats = await rt.stats_worker(lambda: [_container_stats(rt, c) for c in ctrs])
    # Containers removed while the worker read them are not reported.
    return [s for c, s in zip(ctrs, stats, strict=True) if rt.containers.get(c.id) is c]


def _iface(s: IfaceStats) -> api_pb2.NetworkInterfaceUsage:
    return api_pb2.NetworkInterfaceUsage(
        name=s.name, rx_bytes=_u64(s.rx_bytes), rx_errors=_u64(s.rx_errors),
        tx_bytes=_u64(s.tx_bytes), tx_errors=_u64(s.tx_errors))


def _pod_stats(rt: Runtime, pod: Sandbox) -> api_pb2.PodSandboxStats:
    now = time.time_ns()
    stats = read_stats(pod.meta.cgroup_parent) if pod.ready else None
    rate = _rate(rt, pod.meta.cgroup_parent, stats) if stats is not None else None
    linux = api_pb2.LinuxPodSandboxStats(
        cpu=_cpu(stats, rate, now),
        memory=_memory(stats, now),
        process=api_pb2.ProcessUsage(timestamp=now,
                                     process_count=_u64(stats.pids if stats else None)),
        containers=[_container_stats(rt, c) for c in rt.containers.of_pod(pod.id)],
    )
    if pod.ready and pod.meta.netns_path and pod.status.pid:
        try:
            ifaces = {k: v for k, v in read_net_dev(pod.status.pid).items() if k != "lo"}
        except OSError:
            ifaces = {}
        default = default_interface(ifaces)
        linux.network.CopyFrom(api_pb2.NetworkUsage(
            timestamp=now, default_interface=_iface(default) if default else None,
            interfaces=[_iface(s) for s in ifaces.values()]))
    return api_pb2.PodSandboxStats(
        attributes=api_pb2.PodSandboxAttributes(id=pod.id, metadata=pod.config.metadata,
                                                labels=pod.config.labels,
                                                annotations=pod.config.annotations),
        linux=linux,
    )


async def pod_sandbox_stats(rt: Runtime, pod_id: str) -> api_pb2.PodSandboxStats:
    pod = rt.sandboxes.lookup(pod_id)
    return await rt.stats_worker(lambda: _pod_stats(rt, pod))


async def list_pod_sandbox_stats(rt: Runtime, f: api_pb2.PodSandboxStatsFilter | None
                                 ) -> list[api_pb2.PodSandboxStats]:
    pods = [p for p in rt.sandboxes
            if f is None or ((not f.id or p.id.startswith(f.id)) and all(
                p.config.labels.get(k) == v for k, v in f.label_selector.items()))]
    stats = await rt.stats_worker(lambda: [_pod_stats(rt, p) for p in pods])
    return [s for p, s in zip(pods, stats, strict=True) if rt.sandboxes.get(p.id) is p]


__all__ = ["container_stats", "list_container_stats",
           "list_pod_sandbox_stats", "pod_sandbox_stats"]
