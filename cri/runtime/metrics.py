"""ListMetricDescriptors and ListPodSandboxMetrics: the kubelet's cAdvisor container_* metrics,
served by the runtime (the kubelet's PodAndContainerStatsFromCRI path re-exports them as is).

Names, types and label keys follow cAdvisor, so dashboards written against the kubelet's
/metrics/cadvisor keep working: every series carries container, id, image, name, namespace and
pod, plus the metric's own (interface, device, ...). The kubelet builds one Prometheus
descriptor per MetricDescriptor and fills label_keys from label_values by position, so the
two must line up exactly, and no two series of one name may share their label values.

Container metrics come from the container's cgroup, /proc and its writable layer; the pod's own
entry carries what only the pod has: its network interfaces (container="POD", as cAdvisor
labelled the pause container that held the network namespace).

The CRI carries uint64 values, so "seconds" metrics are whole seconds (truncated), as CRI-O
sends them: the kubelet exports the number unchanged. A single-series metric the kernel does not
report is sent as 0, as cAdvisor does, rather than left out: a missing series reads as a
runtime without the metric.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from cri.api import api_pb2
from cri.runtime.container_status import shown_image
from cri.runtime.daemon import Runtime
from cri.store.container import Container
from cri.store.sandbox import Sandbox
from sandbox import diskusage
from sandbox.cgroups.metrics import (
    CgroupMetrics,
    block_device_name,
    count_fds,
    read_metrics,
    soft_limits,
)
from sandbox.cgroups.stats import CgroupStats, read_stats
from sandbox.errors import CgroupError
from sandbox.netstats import IfaceStats, read_net_dev

__all__ = ["BASE_LABELS", "DESCRIPTORS", "list_metric_descriptors", "list_pod_sandbox_metrics"]

log = logging.getLogger(__name__)

BASE_LABELS = ("container", "id", "image", "name", "namespace", "pod")
POD_CONTAINER = "POD"

COUNTER = api_pb2.MetricType.COUNTER
GAUGE = api_pb2.MetricType.GAUGE
_NS = 1_000_000_000
_US = 1_000_000
_DEFAULT_SHARES = 1024  # the kernel's, and what cgroup v2's default cpu.weight stands for


@dataclass(frozen=True)
class _Desc:
    name: str
    help: str
    type: api_pb2.MetricType.ValueType
    labels: tuple[str, ...] = ()  # after BASE_LABELS


_NET = ("interface",)
_DEV = ("device",)

DESCRIPTORS: tuple[_Desc, ...] = (
    # CPU (cgroup cpuacct / cpu.stat)
    _Desc("container_cpu_usage_seconds_total", "CPU time used, user and system, in seconds.",
          COUNTER, ("cpu",)),
    _Desc("container_cpu_user_seconds_total", "CPU time used in user mode, in seconds.", COUNTER),
    _Desc("container_cpu_system_seconds_total", "CPU time used in kernel mode, in seconds.",
          COUNTER),
    _Desc("container_cpu_cfs_periods_total", "CFS enforcement periods that have elapsed.", COUNTER),
    _Desc("container_cpu_cfs_throttled_periods_total", "CFS periods in which the container was "
          "throttled.", COUNTER),
    _Desc("container_cpu_cfs_throttled_seconds_total", "Time the container spent throttled, in "
          "seconds.", COUNTER),
    # Memory
    _Desc("container_memory_usage_bytes", "Memory in use, page cache included, in bytes.", GAUGE),
    _Desc("container_memory_working_set_bytes", "Memory in use minus inactive file pages, in "
          "bytes (what the kubelet evicts on).", GAUGE),
    _Desc("container_memory_rss", "Anonymous memory (RSS), in bytes.", GAUGE),
    _Desc("container_memory_cache", "Page cache, in bytes.", GAUGE),
    _Desc("container_memory_swap", "Swap in use, in bytes.", GAUGE),
    _Desc("container_memory_mapped_file", "Memory-mapped file pages, in bytes.", GAUGE),
    _Desc("container_memory_kernel_usage", "Kernel memory charged to the container, in bytes.",
          GAUGE),
    _Desc("container_memory_max_usage_bytes", "Highest memory usage recorded, in bytes.", GAUGE),
    _Desc("container_memory_failcnt", "Times memory usage hit the limit.", COUNTER),
    _Desc("container_memory_failures_total", "Page faults, by type (pgfault, pgmajfault) and "
          "scope (container, hierarchy).", COUNTER, ("failure_type", "scope")),
    _Desc("container_oom_events_total", "Processes of the container killed by the OOM killer.",
          COUNTER),
    # Hugetlb
    _Desc("container_hugetlb_usage_bytes", "Huge pages in use, in bytes, by page size.", GAUGE,
          ("pagesize",)),
    _Desc("container_hugetlb_max_usage_bytes", "Highest huge page usage recorded, in bytes, by "
          "page size.", GAUGE, ("pagesize",)),
    # Block I/O
    _Desc("container_blkio_device_usage_total", "Block I/O bytes, by device and operation.",
          COUNTER, ("device", "major", "minor", "operation")),
    _Desc("container_fs_reads_bytes_total", "Bytes read from block devices.", COUNTER, _DEV),
    _Desc("container_fs_reads_total", "Reads completed on block devices.", COUNTER, _DEV),
    _Desc("container_fs_writes_bytes_total", "Bytes written to block devices.", COUNTER, _DEV),
    _Desc("container_fs_writes_total", "Writes completed on block devices.", COUNTER, _DEV),
    # Writable layer
    _Desc("container_fs_usage_bytes", "Disk space used by the container's writable layer, in "
          "bytes.", GAUGE, _DEV),
    _Desc("container_fs_limit_bytes", "Size of the filesystem holding the writable layer, in "
          "bytes.", GAUGE, _DEV),
    _Desc("container_fs_inodes_total", "Inodes of the filesystem holding the writable layer.",
          GAUGE, _DEV),
    _Desc("container_fs_inodes_free", "Free inodes of the filesystem holding the writable layer.",
          GAUGE, _DEV),
    # Network (the pod's namespace)
    _Desc("container_network_receive_bytes_total", "Bytes received.", COUNTER, _NET),
    _Desc("container_network_receive_packets_total", "Packets received.", COUNTER, _NET),
    _Desc("container_network_receive_packets_dropped_total", "Packets dropped while receiving.",
          COUNTER, _NET),
    _Desc("container_network_receive_errors_total", "Errors while receiving.", COUNTER, _NET),
    _Desc("container_network_transmit_bytes_total", "Bytes transmitted.", COUNTER, _NET),
    _Desc("container_network_transmit_packets_total", "Packets transmitted.", COUNTER, _NET),
    _Desc("container_network_transmit_packets_dropped_total", "Packets dropped while "
          "transmitting.", COUNTER, _NET),
    _Desc("container_network_transmit_errors_total", "Errors while transmitting.", COUNTER, _NET),
    # Processes
    _Desc("container_processes", "Processes in the container.", GAUGE),
    _Desc("container_threads", "Threads in the container.", GAUGE),
    _Desc("container_threads_max", "Most threads the container may have; 0 means no limit.", GAUGE),
    _Desc("container_file_descriptors", "Open file descriptors of the container's processes.",
          GAUGE),
    _Desc("container_sockets", "Open sockets of the container's processes.", GAUGE),
    _Desc("container_ulimits_soft", "Soft resource limits of the container's first process.",
          GAUGE, ("ulimit",)),
    # Pressure stall information (cgroup2 files; on a hybrid host, its cgroup2 mount)
    _Desc("container_pressure_cpu_waiting_seconds_total", "Time some tasks waited for a CPU, in "
          "seconds.", COUNTER),
    _Desc("container_pressure_cpu_stalled_seconds_total", "Time no task could run for want of a "
          "CPU, in seconds.", COUNTER),
    _Desc("container_pressure_memory_waiting_seconds_total", "Time some tasks waited for memory, "
          "in seconds.", COUNTER),
    _Desc("container_pressure_memory_stalled_seconds_total", "Time no task could run for want of "
          "memory, in seconds.", COUNTER),
    _Desc("container_pressure_io_waiting_seconds_total", "Time some tasks waited for I/O, in "
          "seconds.", COUNTER),
    _Desc("container_pressure_io_stalled_seconds_total", "Time no task could run for want of "
          "I/O, in seconds.", COUNTER),
    # Limits as the kernel holds them
    _Desc("container_spec_cpu_period", "CFS period, in microseconds.", GAUGE),
    _Desc("container_spec_cpu_quota", "CFS quota per period, in microseconds (only when set).",
          GAUGE),
    _Desc("container_spec_cpu_shares", "CPU shares.", GAUGE),
    _Desc("container_spec_memory_limit_bytes", "Memory limit, in bytes; 0 means no limit.", GAUGE),
    _Desc("container_spec_memory_reservation_limit_bytes", "Memory reservation, in bytes; 0 "
          "means none.", GAUGE),
    _Desc("container_spec_memory_swap_limit_bytes", "Swap limit, in bytes (memory plus swap on "
          "cgroup v1); 0 means no limit.", GAUGE),
    # Lifecycle
    _Desc("container_start_time_seconds", "When the container started, in seconds since the "
          "epoch.", GAUGE),
    _Desc("container_last_seen", "When the runtime last saw the container, in seconds since the "
          "epoch.", GAUGE),
)

_BY_NAME = {d.name: d for d in DESCRIPTORS}


def list_metric_descriptors() -> list[api_pb2.MetricDescriptor]:
    return [api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=[*BASE_LABELS, *d.labels])
            for d in DESCRIPTORS]


async def list_pod_sandbox_metrics(rt: Runtime) -> list[api_pb2.PodSandboxMetrics]:
    """Every pod's metrics, read in one pass in a worker thread (the stores are only touched
    here, on the event loop)."""
    work = [(pod, rt.containers.of_pod(pod.id)) for pod in rt.sandboxes]
    return await rt.stats_worker(lambda: _collect(work, rt.layer_usage))


# --- building ----------------------------------------------------------------------------------


class _Series:
    """The metrics of one label set (a container, or a pod's network)."""

    def __init__(self, base: list[str]) -> None:
        self.base = base
        self.timestamp = time.time_ns()
        self.metrics: list[api_pb2.Metric] = []

    def add(self, name: str, value: int | None, *labels: str) -> None:
        desc = _BY_NAME[name]
        if len(labels) != len(desc.labels):
            raise ValueError(f"{name}: {len(labels)} label values for {desc.labels}")
        self.metrics.append(api_pb2.Metric(
            name=name, timestamp=self.timestamp, metric_type=desc.type,
            label_values=[*self.base, *labels],
            value=api_pb2.UInt64Value(value=max(0, value or 0))))


class _Devices:
    """``/dev/<name>`` per major:minor for one pass; "major:minor" when sysfs does not know it."""

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], str] = {}

    def name(self, major: int, minor: int) -> str:
        key = (major, minor)
        if key not in self._names:
            self._names[key] = block_device_name(major, minor) or f"{major}:{minor}"
        return self._names[key]


def _collect(work: list[tuple[Sandbox, list[Container]]], layers: diskusage.UsageCache
             ) -> list[api_pb2.PodSandboxMetrics]:
    devices = _Devices()
    out = []
    for pod, ctrs in work:
        ctr_metrics = [_container(pod, c, devices, layers) for c in ctrs if c.running]
        out.append(api_pb2.PodSandboxMetrics(pod_sandbox_id=pod.id, metrics=_network(pod),
                                             container_metrics=ctr_metrics))
    return out


def _network(pod: Sandbox) -> list[api_pb2.Metric]:
    # A host-network pod has no interfaces of its own; the host's are not the pod's traffic.
    if not (pod.ready and pod.meta.netns_path and pod.status.pid):
        return []
    try:
        ifaces = read_net_dev(pod.status.pid)
    except OSError:
        return []  # the infra process is exiting
    md = pod.config.metadata
    series = _Series([POD_CONTAINER, pod.id, "", pod.meta.name, md.namespace, md.name])
    for name in sorted(ifaces):
        if name != "lo":  # cAdvisor leaves loopback out: it is not pod traffic
            _interface(series, ifaces[name])
    return series.metrics


def _interface(s: _Series, i: IfaceStats) -> None:
    # Interface names are bytes; read_net_dev keeps odd ones as surrogates, which a protobuf
    # string refuses (the whole reply would fail for one interface).
    name = i.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    s.add("container_network_receive_bytes_total", i.rx_bytes, name)
    s.add("container_network_receive_packets_total", i.rx_packets, name)
    s.add("container_network_receive_packets_dropped_total", i.rx_dropped, name)
    s.add("container_network_receive_errors_total", i.rx_errors, name)
    s.add("container_network_transmit_bytes_total", i.tx_bytes, name)
    s.add("container_network_transmit_packets_total", i.tx_packets, name)
    s.add("container_network_transmit_packets_dropped_total", i.tx_dropped, name)
    s.add("container_network_transmit_errors_total", i.tx_errors, name)


def _container(pod: Sandbox, ctr: Container, devices: _Devices, layers: diskusage.UsageCache
               ) -> api_pb2.ContainerMetrics:
    md = pod.config.metadata
    s = _Series([ctr.config.metadata.name, ctr.id, shown_image(ctr), ctr.meta.name,
                 md.namespace, md.name])
    s.add("container_last_seen", s.timestamp // _NS)
    s.add("container_start_time_seconds", (ctr.status.started_at or ctr.meta.created_at) // _NS)
    _writable_layer(s, ctr, devices, layers)
    try:
        stats = read_stats(ctr.meta.cgroup_path)
        extra = read_metrics(ctr.meta.cgroup_path)
    except CgroupError as exc:
        log.warning("metrics of container %s: %s", ctr.id, exc)
        stats = extra = None
    # None: the container exited and runc removed its cgroup while we read it.
    if stats is not None and extra is not None:
        _cpu(s, stats, extra)
        _memory(s, stats, extra)
        _blkio(s, extra, devices)
        _hugetlb(s, extra)
        _pressure(s, extra)
        _spec(s, ctr, stats, extra)
        _processes(s, ctr, stats, extra)
    return api_pb2.ContainerMetrics(container_id=ctr.id, metrics=s.metrics)


def _writable_layer(s: _Series, ctr: Container, devices: _Devices,
                    layers: diskusage.UsageCache) -> None:
    try:
        st = os.stat(ctr.upper)
        vfs = os.statvfs(ctr.upper)
        used = layers.usage(ctr.id, ctr.upper).used_bytes
    except OSError as exc:
        log.debug("writable layer of container %s: %s", ctr.id, exc)
        return
    dev = devices.name(os.major(st.st_dev), os.minor(st.st_dev))
    s.add("container_fs_usage_bytes", used, dev)
    s.add("container_fs_limit_bytes", vfs.f_blocks * vfs.f_frsize, dev)
    s.add("container_fs_inodes_total", vfs.f_files, dev)
    s.add("container_fs_inodes_free", vfs.f_ffree, dev)


def _seconds(ns: int | None) -> int | None:
    return None if ns is None else ns // _NS


def _cpu(s: _Series, st: CgroupStats, m: CgroupMetrics) -> None:
    # Per-CPU series are off by default in the kubelet's cAdvisor too; one "total" series.
    s.add("container_cpu_usage_seconds_total", _seconds(st.cpu_usage_ns), "total")
    s.add("container_cpu_user_seconds_total", _seconds(st.cpu_user_ns))
    s.add("container_cpu_system_seconds_total", _seconds(st.cpu_system_ns))
    s.add("container_cpu_cfs_periods_total", m.cpu_periods)
    s.add("container_cpu_cfs_throttled_periods_total", m.cpu_throttled_periods)
    s.add("container_cpu_cfs_throttled_seconds_total", _seconds(m.cpu_throttled_ns))


def _memory(s: _Series, st: CgroupStats, m: CgroupMetrics) -> None:
    s.add("container_memory_usage_bytes", st.memory_usage)
    s.add("container_memory_working_set_bytes", st.memory_working_set)
    s.add("container_memory_rss", st.memory_rss)
    s.add("container_memory_cache", st.memory_cache)
    s.add("container_memory_swap", st.memory_swap)
    s.add("container_memory_mapped_file", m.memory_mapped_file)
    s.add("container_memory_kernel_usage", m.memory_kernel_usage)
    s.add("container_memory_max_usage_bytes", m.memory_max_usage)
    s.add("container_memory_failcnt", m.memory_failcnt)
    s.add("container_oom_events_total", st.oom_events)
    failures = "container_memory_failures_total"
    s.add(failures, m.page_faults, "pgfault", "container")
    s.add(failures, m.page_faults_hierarchy, "pgfault", "hierarchy")
    s.add(failures, m.major_page_faults, "pgmajfault", "container")
    s.add(failures, m.major_page_faults_hierarchy, "pgmajfault", "hierarchy")


_READ_WRITE = {"Read": "reads", "Write": "writes"}


def _blkio(s: _Series, m: CgroupMetrics, devices: _Devices) -> None:
    for io in m.io_service_bytes:
        dev = devices.name(io.major, io.minor)
        s.add("container_blkio_device_usage_total", io.value, dev, str(io.major), str(io.minor), io.op)
        if io.op in _READ_WRITE:
            s.add(f"container_fs_{_READ_WRITE[io.op]}_bytes_total", io.value, dev)
    for io in m.io_serviced:
        if io.op in _READ_WRITE:
            s.add(f"container_fs_{_READ_WRITE[io.op]}_total", io.value, devices.name(io.major, io.minor))


def _hugetlb(s: _Series, m: CgroupMetrics) -> None:
    for h in m.hugetlb:
        s.add("container_hugetlb_usage_bytes", h.usage, h.pagesize)
        if h.max_usage is not None:  # cgroup v2 keeps no peak: no series rather than a false 0
            s.add("container_hugetlb_max_usage_bytes", h.max_usage, h.pagesize)


def _pressure(s: _Series, m: CgroupMetrics) -> None:
    for p in m.pressure:
        if p.some_usec is not None:
            s.add(f"container_pressure_{p.resource}_waiting_seconds_total", p.some_usec // _US)
        if p.full_usec is not None:
            s.add(f"container_pressure_{p.resource}_stalled_seconds_total", p.full_usec // _US)


def _applied_resources(ctr: Container) -> api_pb2.LinuxContainerResources:
    """The resources as last applied: UpdateContainerResources stores its request in status."""
    if not ctr.status.resources:
        return ctr.config.linux.resources
    res = api_pb2.LinuxContainerResources()
    res.ParseFromString(ctr.status.resources)
    return res


def _spec(s: _Series, ctr: Container, st: CgroupStats, m: CgroupMetrics) -> None:
    s.add("container_spec_cpu_period", m.cpu_period_us)
    # cgroup v2 keeps only cpu.weight, converted from the shares by the OCI runtime with a
    # formula that changed between runc versions; the shares asked for are exact everywhere.
    shares = _applied_resources(ctr).cpu_shares or m.cpu_shares or _DEFAULT_SHARES
    s.add("container_spec_cpu_shares", shares)
    if m.cpu_quota_us is not None:  # cAdvisor sends the quota only when there is one
        s.add("container_spec_cpu_quota", m.cpu_quota_us)
    s.add("container_spec_memory_limit_bytes", st.memory_limit)
    s.add("container_spec_memory_reservation_limit_bytes", m.memory_reservation)
    s.add("container_spec_memory_swap_limit_bytes", m.memory_swap_limit)


def _processes(s: _Series, ctr: Container, st: CgroupStats, m: CgroupMetrics) -> None:
    s.add("container_processes", len(m.processes))
    s.add("container_threads", st.threads if st.threads is not None else st.pids)
    s.add("container_threads_max", m.threads_max)
    try:
        fds = count_fds(m.processes)
        limits = soft_limits(ctr.status.pid) if ctr.status.pid else None
    except OSError as exc:
        log.debug("processes of container %s: %s", ctr.id, exc)
        return
    s.add("container_file_descriptors", fds.fds)
    s.add("container_sockets", fds.sockets)
    # cAdvisor reports the one limit that matters to most workloads; RLIMIT_NOFILE always has
    # a finite soft value (the kernel caps it at fs.nr_open).
    nofile = (limits or {}).get("max_open_files")
    if nofile is not None:
        s.add("container_ulimits_soft", nofile, "max_open_files")
