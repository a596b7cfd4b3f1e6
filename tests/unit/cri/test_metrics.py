from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cri.api import api_pb2
from cri.runtime import metrics
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerMeta, ContainerState, ContainerStatus
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus
from sandbox import cgroups
from sandbox.cgroups import V1Layout
from sandbox.cgroups.metrics import CgroupMetrics, HugetlbUsage, IoStat, Pressure
from sandbox.cgroups.stats import CgroupStats
from sandbox.diskusage import UsageCache
from sandbox.errors import CgroupError
from sandbox.netstats import IfaceStats

MiB = 1 << 20

# The metric names critest checks ListMetricDescriptors for (cri-tools' pkg/validate/pod.go,
# expectedMetricDescriptorNames, as of its main branch in August 2026; release 1.36 has no
# such check yet).
CRITEST_EXPECTED_METRICS = (
    "container_blkio_device_usage_total", "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free",
    "container_fs_inodes_total", "container_fs_limit_bytes", "container_fs_reads_bytes_total",
    "container_fs_reads_total", "container_fs_usage_bytes", "container_fs_writes_bytes_total",
    "container_fs_writes_total", "container_hugetlb_max_usage_bytes",
    "container_hugetlb_usage_bytes", "container_last_seen", "container_memory_cache",
    "container_memory_failcnt", "container_memory_failures_total", "container_memory_kernel_usage",
    "container_memory_mapped_file", "container_memory_max_usage_bytes", "container_memory_rss",
    "container_memory_swap", "container_memory_usage_bytes", "container_memory_working_set_bytes",
    "container_network_receive_bytes_total", "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total", "container_network_receive_packets_total",
    "container_network_transmit_bytes_total", "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
    "container_oom_events_total", "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_cpu_waiting_seconds_total", "container_pressure_io_stalled_seconds_total",
    "container_pressure_io_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total", "container_processes", "container_sockets",
    "container_spec_cpu_period", "container_spec_cpu_quota", "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes", "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads",
    "container_threads_max", "container_ulimits_soft",
)

# What a host may lack: block I/O accounting (virtual disks, cgroup v1 without a throttle
# rule), a hugetlb controller, PSI.
HOST_DEPENDENT = frozenset({
    "container_blkio_device_usage_total", "container_fs_reads_bytes_total",
    "container_fs_reads_total", "container_fs_writes_bytes_total", "container_fs_writes_total",
    "container_hugetlb_usage_bytes", "container_hugetlb_max_usage_bytes",
    *(f"container_pressure_{r}_{k}_seconds_total" for r in ("cpu", "memory", "io")
      for k in ("waiting", "stalled")),
})
# Sent only where the pod has its own network namespace, and the quota only when one is set.
NETWORK = frozenset(d.name for d in metrics.DESCRIPTORS if d.labels == ("interface",))
WRITABLE_LAYER_AND_LIFECYCLE = frozenset({
    "container_fs_usage_bytes", "container_fs_limit_bytes", "container_fs_inodes_total",
    "container_fs_inodes_free", "container_start_time_seconds", "container_last_seen",
})


# --- descriptors ---------------------------------------------------------------------------------


def test_descriptors_are_well_formed() -> None:
    descs = metrics.list_metric_descriptors()
    names = [d.name for d in descs]
    assert len(names) == len(set(names))
    for d in descs:
        assert d.help, d.name
        assert list(d.label_keys[:6]) == list(metrics.BASE_LABELS), d.name
        assert len(set(d.label_keys)) == len(d.label_keys), d.name
    types = {d.name: d.type for d in metrics.DESCRIPTORS}
    # Prometheus naming: a _total is a counter (inodes_total, a filesystem's size, is the one
    # gauge that cAdvisor named so); bytes and counts of now are gauges.
    assert all(t == metrics.COUNTER for n, t in types.items()
               if n.endswith("_total") and n != "container_fs_inodes_total")
    assert types["container_fs_inodes_total"] == metrics.GAUGE
    for gauge in ("container_memory_working_set_bytes", "container_processes",
                  "container_spec_memory_limit_bytes", "container_last_seen"):
        assert types[gauge] == metrics.GAUGE
    keys = {d.name: list(d.label_keys[6:]) for d in descs}
    assert keys["container_network_receive_bytes_total"] == ["interface"]
    assert keys["container_memory_failures_total"] == ["failure_type", "scope"]
    assert keys["container_blkio_device_usage_total"] == ["device", "major", "minor", "operation"]
    assert keys["container_cpu_usage_seconds_total"] == ["cpu"]


def test_every_metric_critest_expects_is_described() -> None:
    described = {d.name for d in metrics.list_metric_descriptors()}
    assert sorted(set(CRITEST_EXPECTED_METRICS) - described) == []


# --- fixtures: pods and containers as the stores hold them ---------------------------------------


def _pod(pod_id: str, name: str, *, pid: int = 0, netns: str = "/var/run/netns/x",
         cgroup: str = "/pycri-absent/pod") -> Sandbox:
    meta = SandboxMeta(id=pod_id, name=f"k8s_POD_{name}_ns1_uid1_0", runtime_handler="",
                       created_at=1, run_dir="/nonexistent", netns_path=netns, cgroup_parent=cgroup,
                       cgroup_created=True, hostname=name, shm_path="", infra_id=pod_id)
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid="uid1", namespace="ns1"))
    return Sandbox(meta, config, SandboxStatus(state=SandboxState.READY, pid=pid))


def _ctr(tmp_path: Path, pod: Sandbox, ctr_id: str, name: str, *, cgroup: str, pid: int = 0,
         state: ContainerState = ContainerState.RUNNING,
         resources: api_pb2.LinuxContainerResources | None = None) -> Container:
    meta = ContainerMeta(id=ctr_id, name=f"k8s_{name}_{pod.config.metadata.name}_ns1_uid1_0",
                         pod_id=pod.id, created_at=1_700_000_000_123_456_789,
                         image="busybox:1.36", image_id="sha256:ab", image_ref="sha256:ab",
                         chain_ids=[], log_path="", cgroup_path=cgroup, stop_signal=15, uid=0,
                         gid=0, additional_gids=[], username="", pid_namespace="container")
    config = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=name))
    if resources is not None:
        config.linux.resources.CopyFrom(resources)
    status = ContainerStatus(state=state, pid=pid, started_at=1_700_000_100_999_999_999)
    ctr = Container(meta, config, status, tmp_path / ctr_id)
    ctr.upper.mkdir(parents=True)
    for i in range(10):
        (ctr.upper / f"inode_test_file_{i}").write_text("hi\n")
    return ctr


def _runtime(pods: list[tuple[Sandbox, list[Container]]]) -> Runtime:
    by_id = {p.id: ctrs for p, ctrs in pods}
    fake = SimpleNamespace(sandboxes=[p for p, _ in pods],
                           containers=SimpleNamespace(of_pod=lambda pod_id: by_id.get(pod_id, [])),
                           layer_usage=UsageCache(),
                           stats_worker=asyncio.to_thread)
    return cast(Runtime, fake)


def _list(rt: Runtime) -> list[api_pb2.PodSandboxMetrics]:
    return asyncio.run(metrics.list_pod_sandbox_metrics(rt))


def _all(pm: api_pb2.PodSandboxMetrics) -> list[api_pb2.Metric]:
    return [*pm.metrics, *(m for cm in pm.container_metrics for m in cm.metrics)]


def _check_shapes(pm: api_pb2.PodSandboxMetrics) -> None:
    """What the kubelet relies on: values line up with the descriptor's keys, and no series
    repeats (Prometheus refuses a scrape with duplicate label sets)."""
    keys = {d.name: len(d.label_keys) for d in metrics.list_metric_descriptors()}
    seen = set()
    for m in _all(pm):
        assert len(m.label_values) == keys[m.name], m
        assert m.HasField("value")
        series = (m.name, tuple(m.label_values))
        assert series not in seen, series
        seen.add(series)


def _by_name(ms: list[api_pb2.Metric]) -> dict[str, list[api_pb2.Metric]]:
    out: dict[str, list[api_pb2.Metric]] = {}
    for m in ms:
        out.setdefault(m.name, []).append(m)
    return out


# --- without cgroups: what a container whose cgroup is gone still reports -----------------------


def test_container_without_a_cgroup_reports_its_layer_and_lifecycle(tmp_path: Path) -> None:
    pod = _pod("p" * 64, "web", netns="")  # host network: no interfaces of its own
    running = _ctr(tmp_path, pod, "c" * 64, "app", cgroup="/pycri-test-absent/pod/c")
    exited = _ctr(tmp_path, pod, "e" * 64, "done", cgroup="/pycri-test-absent/pod/e",
                  state=ContainerState.EXITED)
    before = time.time_ns() // 1_000_000_000
    [pm] = _list(_runtime([(pod, [running, exited])]))
    after = time.time_ns() // 1_000_000_000
    assert pm.pod_sandbox_id == pod.id
    assert list(pm.metrics) == []
    assert [cm.container_id for cm in pm.container_metrics] == [running.id]  # exited: left out
    _check_shapes(pm)
    found = _by_name(list(pm.container_metrics[0].metrics))
    assert set(found) == WRITABLE_LAYER_AND_LIFECYCLE
    for ms in found.values():
        assert list(ms[0].label_values[:6]) == [
            "app", running.id, "busybox:1.36", "k8s_app_web_ns1_uid1_0", "ns1", "web"]
    assert found["container_start_time_seconds"][0].value.value == 1_700_000_100
    assert before <= found["container_last_seen"][0].value.value <= after
    st = os.statvfs(running.upper)
    assert found["container_fs_limit_bytes"][0].value.value == st.f_blocks * st.f_frsize
    assert found["container_fs_inodes_total"][0].value.value == st.f_files
    assert found["container_fs_usage_bytes"][0].value.value >= 10 * 3


def test_image_label_is_the_name_for_a_container_made_by_image_id(tmp_path: Path) -> None:
    """The kubelet creates containers by image id: the series name the image as
    ContainerStatus does (dashboards select on it), not by its sha256."""
    pod = _pod("p" * 64, "web", netns="")
    ctr = _ctr(tmp_path, pod, "c" * 64, "app", cgroup="/pycri-test-absent/pod/c")
    ctr.meta = dataclasses.replace(ctr.meta, image="sha256:" + "a" * 64,
                                   image_name="docker.io/library/busybox:1.36")
    [pm] = _list(_runtime([(pod, [ctr])]))
    assert {m.label_values[2] for m in pm.container_metrics[0].metrics} == {
        "docker.io/library/busybox:1.36"}


def test_no_pods_no_metrics() -> None:
    assert _list(_runtime([])) == []


# --- the translation, fed known readings -------------------------------------------------------

STATS = CgroupStats(timestamp_ns=1, cpu_usage_ns=3_999_999_999, cpu_user_ns=2_500_000_000,
                    cpu_system_ns=999_999_999, memory_usage=300 * MiB, memory_working_set=200 * MiB,
                    memory_rss=128 * MiB, memory_cache=150 * MiB, memory_swap=None,
                    page_faults=8193245, major_page_faults=951, memory_limit=None, oom_events=2,
                    pids=3, threads=5)
EXTRA = CgroupMetrics(
    cpu_periods=50, cpu_throttled_periods=7, cpu_throttled_ns=1_500_000_000, memory_failcnt=3,
    memory_max_usage=None, memory_mapped_file=4096, memory_kernel_usage=2 * MiB,
    page_faults=10, major_page_faults=1, page_faults_hierarchy=20, major_page_faults_hierarchy=2,
    processes=(), threads_max=None, cpu_shares=2, cpu_weight=None, cpu_quota_us=None,
    cpu_period_us=100000, memory_reservation=None, memory_swap_limit=64 * MiB,
    io_service_bytes=(IoStat(8, 0, "Read", 4096), IoStat(8, 0, "Write", 8192),
                      IoStat(8, 0, "Total", 12288), IoStat(253, 1, "Read", 512)),
    io_serviced=(IoStat(8, 0, "Read", 1), IoStat(8, 0, "Write", 2)),
    hugetlb=(HugetlbUsage("2MB", 4 * MiB, 8 * MiB), HugetlbUsage("1GB", 0, None)),
    pressure=(Pressure("cpu", 2_999_999, None), Pressure("io", 5_000_000, 1_000_000)),
)


def test_translation_of_known_readings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _pod("p" * 64, "web", netns="")
    ctr = _ctr(tmp_path, pod, "c" * 64, "app", cgroup="/pycri/pod/c")
    monkeypatch.setattr(metrics, "read_stats", lambda path: STATS)
    monkeypatch.setattr(metrics, "read_metrics", lambda path: EXTRA)
    monkeypatch.setattr(metrics, "block_device_name",
                        lambda major, minor: "/dev/sda" if (major, minor) == (8, 0) else None)
    [pm] = _list(_runtime([(pod, [ctr])]))
    _check_shapes(pm)
    got = {(m.name, *m.label_values[6:]): (m.value.value, m.metric_type)
           for m in pm.container_metrics[0].metrics}
    C, G = metrics.COUNTER, metrics.GAUGE
    expected = {
        # Seconds truncated, never rounded up.
        ("container_cpu_usage_seconds_total", "total"): (3, C),
        ("container_cpu_user_seconds_total",): (2, C),
        ("container_cpu_system_seconds_total",): (0, C),
        ("container_cpu_cfs_periods_total",): (50, C),
        ("container_cpu_cfs_throttled_periods_total",): (7, C),
        ("container_cpu_cfs_throttled_seconds_total",): (1, C),
        ("container_memory_usage_bytes",): (300 * MiB, G),
        ("container_memory_working_set_bytes",): (200 * MiB, G),
        ("container_memory_rss",): (128 * MiB, G),
        ("container_memory_cache",): (150 * MiB, G),
        ("container_memory_swap",): (0, G),  # not reported: 0, as cAdvisor
        ("container_memory_mapped_file",): (4096, G),
        ("container_memory_kernel_usage",): (2 * MiB, G),
        ("container_memory_max_usage_bytes",): (0, G),
        ("container_memory_failcnt",): (3, C),
        ("container_oom_events_total",): (2, C),
        ("container_memory_failures_total", "pgfault", "container"): (10, C),
        ("container_memory_failures_total", "pgfault", "hierarchy"): (20, C),
        ("container_memory_failures_total", "pgmajfault", "container"): (1, C),
        ("container_memory_failures_total", "pgmajfault", "hierarchy"): (2, C),
        ("container_blkio_device_usage_total", "/dev/sda", "8", "0", "Read"): (4096, C),
        ("container_blkio_device_usage_total", "/dev/sda", "8", "0", "Write"): (8192, C),
        ("container_blkio_device_usage_total", "/dev/sda", "8", "0", "Total"): (12288, C),
        ("container_blkio_device_usage_total", "253:1", "253", "1", "Read"): (512, C),
        ("container_fs_reads_bytes_total", "/dev/sda"): (4096, C),
        ("container_fs_reads_bytes_total", "253:1"): (512, C),
        ("container_fs_writes_bytes_total", "/dev/sda"): (8192, C),
        ("container_fs_reads_total", "/dev/sda"): (1, C),
        ("container_fs_writes_total", "/dev/sda"): (2, C),
        ("container_hugetlb_usage_bytes", "2MB"): (4 * MiB, G),
        ("container_hugetlb_max_usage_bytes", "2MB"): (8 * MiB, G),
        ("container_hugetlb_usage_bytes", "1GB"): (0, G),  # no peak kept: no max series
        ("container_pressure_cpu_waiting_seconds_total",): (2, C),
        ("container_pressure_io_waiting_seconds_total",): (5, C),
        ("container_pressure_io_stalled_seconds_total",): (1, C),
        ("container_spec_cpu_period",): (100000, G),
        ("container_spec_cpu_shares",): (2, G),  # nothing asked through the CRI: the kernel's
        ("container_spec_memory_limit_bytes",): (0, G),  # unlimited
        ("container_spec_memory_reservation_limit_bytes",): (0, G),
        ("container_spec_memory_swap_limit_bytes",): (64 * MiB, G),
        ("container_processes",): (0, G),
        ("container_threads",): (5, G),
        ("container_threads_max",): (0, G),
        ("container_file_descriptors",): (0, G),
        ("container_sockets",): (0, G),
    }
    assert {k: v for k, v in got.items() if k[0] in {n[0] for n in expected}} == expected
    # No quota set: no quota series; no process: no ulimit.
    assert not any(k[0] in ("container_spec_cpu_quota", "container_ulimits_soft") for k in got)


def test_pod_network_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    ifaces = {
        "lo": IfaceStats("lo", 1, 1, 1, 1, 1, 1, 1, 1),
        "eth0": IfaceStats("eth0", rx_bytes=1000, rx_errors=2, tx_bytes=3000, tx_errors=4,
                           rx_packets=10, rx_dropped=1, tx_packets=30, tx_dropped=3),
        # A name that is not UTF-8, as read_net_dev hands it over.
        "v\udcff": IfaceStats("v\udcff", 5, 0, 6, 0),
    }
    seen: list[int] = []
    monkeypatch.setattr(metrics, "read_net_dev", lambda pid: seen.append(pid) or ifaces)
    pod = _pod("p" * 64, "web", pid=4242)
    [pm] = _list(_runtime([(pod, [])]))
    assert seen == [4242]
    _check_shapes(pm)
    got = {(m.name, m.label_values[6]): m.value.value for m in pm.metrics}
    assert {k[1] for k in got} == {"eth0", "v\ufffd"}  # no loopback
    assert {k[0]: v for k, v in got.items() if k[1] == "eth0"} == {
        "container_network_receive_bytes_total": 1000,
        "container_network_receive_packets_total": 10,
        "container_network_receive_packets_dropped_total": 1,
        "container_network_receive_errors_total": 2,
        "container_network_transmit_bytes_total": 3000,
        "container_network_transmit_packets_total": 30,
        "container_network_transmit_packets_dropped_total": 3,
        "container_network_transmit_errors_total": 4,
    }
    assert all(m.metric_type == metrics.COUNTER for m in pm.metrics)
    # A pod that is not ready, or whose infra is gone, has no interfaces to report.
    pod.status.state = SandboxState.NOTREADY
    assert list(_list(_runtime([(pod, [])]))[0].metrics) == []
    pod.status.state = SandboxState.READY

    def gone(pid: int) -> dict[str, IfaceStats]:
        raise ProcessLookupError(pid)

    monkeypatch.setattr(metrics, "read_net_dev", gone)
    assert list(_list(_runtime([(pod, [])]))[0].metrics) == []


# --- against real cgroups ------------------------------------------------------------------------

REAL = Path("/sys/fs/cgroup")


def _real_v1() -> V1Layout | None:
    if os.geteuid() != 0:
        return None
    try:
        layout = cgroups.detect(REAL)
    except (CgroupError, OSError):
        return None
    return layout if isinstance(layout, V1Layout) and layout.dir_of("memory") else None


_V1 = _real_v1()

# The "container": touches 8 MiB, holds a socket, then waits.
_WORKLOAD = """
import socket, sys
sys.stdin.readline()
buf = b"a" * (8 << 20)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("go", flush=True)
sys.stdin.readline()
"""

# The "infra": a network namespace with a veth pair, both ends up.
_INFRA = ("ip link add mx0 type veth peer name mx1 && ip link set mx0 up && ip link set mx1 up"
          " && echo ready && read x")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


@pytest.fixture
def real_pod(tmp_path: Path) -> Iterator[tuple[Runtime, Sandbox, Container, subprocess.Popen[bytes]]]:
    assert _V1 is not None
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod_cg = f"{top}/pod{uuid.uuid4().hex[:12]}"
    ctr_id = uuid.uuid4().hex * 2
    ctr_cg = cgroups.container_cgroup_path(pod_cg, ctr_id)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        infra = subprocess.Popen(["unshare", "--net", "sh", "-c", _INFRA], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        procs.append(infra)
        assert infra.stdout is not None and infra.stdout.readline() == b"ready\n"
        cgroups.create_pod_cgroup(pod_cg, root=REAL)
        cgroups.create_pod_cgroup(ctr_cg, 64 * MiB, cpu_shares=512, cpu_quota=20000,
                                  cpu_period=100000, root=REAL)
        work = subprocess.Popen([sys.executable, "-c", _WORKLOAD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        procs.append(work)
        cgroups.add_pid(ctr_cg, work.pid, root=REAL)
        assert work.stdin is not None and work.stdout is not None
        work.stdin.write(b"x\n")
        work.stdin.flush()
        assert work.stdout.readline() == b"go\n"
        pod = _pod("a" * 64, "web", pid=infra.pid, cgroup=pod_cg)
        ctr = _ctr(tmp_path, pod, ctr_id, "app", cgroup=ctr_cg, pid=work.pid,
                   resources=api_pb2.LinuxContainerResources(cpu_shares=512))
        yield _runtime([(pod, [ctr])]), pod, ctr, work
    finally:
        for proc in procs:
            _stop(proc)
        for h in _V1.hierarchies:
            for path in (ctr_cg, pod_cg, top):
                d = h.path / path[1:]
                if d.is_dir():
                    d.rmdir()


needs_v1 = pytest.mark.skipif(_V1 is None, reason="needs root on a cgroup v1 host with memory")


@needs_v1
def test_a_running_pod_reports_every_metric(real_pod: Any) -> None:
    rt, pod, ctr, _ = real_pod
    [pm] = _list(rt)
    _check_shapes(pm)
    names = {m.name for m in _all(pm)}
    described = {d.name for d in metrics.DESCRIPTORS}
    assert sorted(described - names - HOST_DEPENDENT) == []

    # The pod's own entry: its interfaces, loopback left out.
    assert {m.name for m in pm.metrics} == NETWORK
    for m in pm.metrics:
        assert list(m.label_values[:6]) == ["POD", pod.id, "", pod.meta.name, "ns1", "web"]
    assert {m.label_values[6] for m in pm.metrics} == {"mx0", "mx1"}

    [cm] = pm.container_metrics
    assert cm.container_id == ctr.id
    found = _by_name(list(cm.metrics))
    for ms in found.values():
        assert list(ms[0].label_values[:6]) == ["app", ctr.id, "busybox:1.36", ctr.meta.name, "ns1", "web"]

    def value(name: str, *labels: str) -> int:
        [m] = [m for m in found[name] if tuple(m.label_values[6:]) == labels]
        return m.value.value

    assert value("container_processes") == 1
    assert value("container_threads") >= 1
    assert value("container_threads_max") == 0  # no pids limit
    assert value("container_sockets") == 1
    assert value("container_file_descriptors") >= 4  # stdin, stdout, stderr, the socket
    assert value("container_ulimits_soft", "max_open_files") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert value("container_memory_max_usage_bytes") >= 8 * MiB
    assert value("container_memory_usage_bytes") >= 8 * MiB
    assert value("container_memory_failures_total", "pgfault", "container") > 0
    assert value("container_memory_failures_total", "pgfault", "hierarchy") > 0
    assert value("container_spec_memory_limit_bytes") == 64 * MiB
    assert value("container_spec_cpu_quota") == 20000
    assert value("container_spec_cpu_period") == 100000
    assert value("container_spec_cpu_shares") == 512
    assert value("container_spec_memory_reservation_limit_bytes") == 0
    assert value("container_cpu_usage_seconds_total", "total") >= 0
    assert value("container_start_time_seconds") == 1_700_000_100
    # Counters as whole seconds: never more than the cgroup's nanoseconds say.
    usage_ns = int((REAL / "cpuacct" / ctr.meta.cgroup_path[1:] / "cpuacct.usage").read_text())
    assert value("container_cpu_usage_seconds_total", "total") <= usage_ns // 1_000_000_000


@needs_v1
def test_updated_resources_win_over_the_create_request(real_pod: Any) -> None:
    rt, _, ctr, _ = real_pod
    ctr.status.resources = api_pb2.LinuxContainerResources(cpu_shares=768).SerializeToString()
    [pm] = _list(rt)
    [shares] = [m for m in pm.container_metrics[0].metrics if m.name == "container_spec_cpu_shares"]
    assert shares.value.value == 768


@needs_v1
def test_a_container_gone_from_its_cgroup_keeps_the_rest(real_pod: Any) -> None:
    rt, _, _, work = real_pod
    _stop(work)  # exited, but the store has not heard yet: still "running"
    [pm] = _list(rt)
    _check_shapes(pm)
    found = _by_name(list(pm.container_metrics[0].metrics))
    assert found["container_processes"][0].value.value == 0
    assert found["container_sockets"][0].value.value == 0
    assert "container_ulimits_soft" not in found  # no process to ask
