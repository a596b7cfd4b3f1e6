"""cgroup v2 for real, with the driver the run chose (PYCRI_E2E_CGROUP_DRIVER): limits, swap
off, OOM kills, live updates, stats, where systemd puts pods, containers and monitors, and
recovery. These run in the node guest (hack/node, once per driver); a cgroup v1 host skips
them, as this one says."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.api import api_pb2
from sandbox import cgroups
from tests.e2e.containers import Pod, remove_pod, start_pod, wait_until
from tests.e2e.helpers import Daemon, hugepage_sizes, pod_config, swap_file

pytestmark = pytest.mark.node

MiB = 1 << 20
V2 = Path("/sys/fs/cgroup")
S = api_pb2.ContainerState


@pytest.fixture(autouse=True)
def _cgroup_v2() -> None:
    if not (V2 / "cgroup.controllers").exists():
        pytest.skip("needs a cgroup v2 host (runs in the node guest: sh hack/node/suite.sh)")


def cgroup_dir(path: str) -> Path:
    [d] = cgroups.pod_cgroup_dirs(path)
    return d


def ctr_cgroup(pod: Pod, ctr: str) -> str:
    info = json.loads(pod.status(ctr, verbose=True).info["info"])
    return str(info["cgroupsPath"])


def pod_cgroup(pod: Pod) -> str:
    status = pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
        pod_sandbox_id=pod.id, verbose=True), timeout=10)
    return str(json.loads(status.info["info"])["cgroupParent"])


def read(d: Path, name: str) -> str:
    return (d / name).read_text().strip()


def test_pod_and_container_cgroups_carry_the_limits_with_swap_off(daemon: Daemon, pod: Pod) -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, cpu_shares=512,
                                          cpu_quota=50_000, cpu_period=100_000)
    ctr = pod.run("limited", ["sleep", "1000"], resources=res)
    pod_path = pod_cgroup(pod)
    assert pod_path == daemon.pod_cgroup(pod.config.metadata.uid)
    pod_dir, ctr_dir = cgroup_dir(pod_path), cgroup_dir(ctr_cgroup(pod, ctr))
    assert ctr_dir.parent == pod_dir
    assert read(pod_dir, "memory.swap.max") == "0"  # hierarchical: the whole pod
    assert read(ctr_dir, "memory.max") == str(64 * MiB)
    assert read(ctr_dir, "memory.swap.max") == "0"
    assert read(ctr_dir, "cpu.max") == "50000 100000"
    # runc 1.1 (Debian 12) maps shares onto cpu.weight linearly: 1 + (512-2)*9999/262142.
    assert read(ctr_dir, "cpu.weight") == "20"
    pid = json.loads(pod.status(ctr, verbose=True).info["info"])["pid"]
    assert str(pid) in read(ctr_dir, "cgroup.procs").split()
    if daemon.cgroup_driver == "systemd":
        assert ctr_dir.name == f"pycri-{ctr}.scope"
        assert pod_dir.name.endswith(".slice")
        # Limits are properties systemd keeps, not writes behind its back.
        shown = subprocess.run(["systemctl", "show", "-p", "MemoryMax", "-p", "MemorySwapMax",
                                ctr_dir.name], capture_output=True, text=True, check=True).stdout
        assert f"MemoryMax={64 * MiB}" in shown and "MemorySwapMax=0" in shown
        # ... so systemd re-applying its view of them changes nothing.
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        assert read(ctr_dir, "memory.swap.max") == "0" and read(pod_dir, "memory.swap.max") == "0"
        assert read(ctr_dir, "memory.max") == str(64 * MiB)


@pytest.fixture
def guest_swap() -> Iterator[None]:
    """256 MiB of swap for the test's duration; always removed."""
    with swap_file() as refused:
        assert not refused, f"swapon: {refused}"
        yield


def swapped_out_pages() -> int:
    vmstat = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return int(vmstat["pswpout"])


def test_a_hog_is_oom_killed_with_swap_on_and_nothing_swapped(pod: Pod, guest_swap: None) -> None:
    """busybox `tail` keeps what it reads until it sees a line: /dev/zero has none, so it grows
    to the 64 MiB limit. The node has swap, but nothing of the pod may go there."""
    before = swapped_out_pages()
    ctr = pod.run("hog", ["tail", "/dev/zero"],
                  resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB))
    st = pod.wait_exit(ctr, timeout=300)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    assert swapped_out_pages() == before, "pages of the hog went to swap"


def test_update_container_resources_live(pod: Pod) -> None:
    ctr = pod.run("resized", ["sleep", "1000"],
                  resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB))
    d = cgroup_dir(ctr_cgroup(pod, ctr))
    for memory, quota in ((48 * MiB, 50_000), (96 * MiB, 150_000)):
        pod.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
            container_id=ctr, linux=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=memory, cpu_period=100_000, cpu_quota=quota)), timeout=60)
        assert read(d, "memory.max") == str(memory)
        assert read(d, "memory.swap.max") == "0"
        assert read(d, "cpu.max") == f"{quota} 100000"
    assert pod.status(ctr).status.state == S.CONTAINER_RUNNING


def test_cpuset_hugetlb_and_the_unified_map_reach_the_cgroup(pod: Pod) -> None:
    """What the kubelet sends besides memory and cpu: a cpuset, a zero limit for every huge
    page size the node has, and unified (v2) keys."""
    res = api_pb2.LinuxContainerResources(cpuset_cpus="0", unified={"memory.high": "50331648"})
    sizes = hugepage_sizes()
    for size in sizes:
        res.hugepage_limits.add(page_size=size, limit=0)
    ctr = pod.run("pinned", ["sleep", "1000"], resources=res)
    d = cgroup_dir(ctr_cgroup(pod, ctr))
    assert read(d, "cpuset.cpus") == "0"
    assert read(d, "memory.high") == "50331648"
    assert read(d, "memory.swap.max") == "0"
    for size in sizes:
        assert read(d, f"hugetlb.{size}.max") == "0"


def test_stats_come_from_the_v2_files(pod: Pod) -> None:
    ctr = pod.run("busy", ["sh", "-c", "while :; do :; done"])

    def stats() -> api_pb2.ContainerStats | None:
        got = pod.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=ctr),
                                    timeout=10).stats
        ok = got.cpu.usage_core_nano_seconds.value > 0 and got.memory.working_set_bytes.value > 0
        return got if ok else None

    got = wait_until("cpu and memory stats", stats)
    assert got.attributes.id == ctr
    pod_stats = pod.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=pod.id),
                                       timeout=10).stats
    assert pod_stats.linux.cpu.usage_core_nano_seconds.value >= \
        got.cpu.usage_core_nano_seconds.value
    assert pod_stats.linux.process.process_count.value >= 2  # pause + the shell
    metrics = pod.rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest(),
                                           timeout=30).pod_metrics
    [mine] = [m for m in metrics if m.pod_sandbox_id == pod.id]
    [cm] = [c for c in mine.container_metrics if c.container_id == ctr]
    names = {m.name for m in cm.metrics}
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"} <= names


def monitor_of(daemon: Daemon, ctr: str) -> int:
    pidfile = daemon.root / "conmon" / ctr / "conmon.pid"
    return int(pidfile.read_text())


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text().strip().split("::", 1)[1]


def test_monitors_live_outside_the_daemons_cgroup(daemon: Daemon, pod: Pod) -> None:
    ctr = pod.run("watched", ["sleep", "1000"])
    assert daemon.proc is not None
    monitor = cgroup_of(monitor_of(daemon, ctr))
    assert monitor != cgroup_of(daemon.proc.pid)
    if daemon.cgroup_driver == "systemd":
        # A scope of its own in the pod's slice: counted to the pod, gone with it.
        slice_dir = cgroup_dir(pod_cgroup(pod))
        assert monitor == f"/{slice_dir.relative_to(V2)}/pycri-conmon-{ctr}.scope"
    else:
        assert monitor == daemon.conmon_cgroup


def test_a_killed_daemon_loses_nothing_and_removal_leaves_nothing(daemon: Daemon, pod: Pod) -> None:
    ctr = pod.run("survivor", ["sleep", "1000"])
    pod_dir, ctr_dir = cgroup_dir(pod_cgroup(pod)), cgroup_dir(ctr_cgroup(pod, ctr))
    monitor = monitor_of(daemon, ctr)
    daemon.restart(kill=True)
    assert pod.status(ctr).status.state == S.CONTAINER_RUNNING
    assert pod.exec(ctr, ["echo", "still here"]).stdout == b"still here\n"
    os.kill(monitor, 0)  # the same conmon still watches it
    pod.stop(ctr)
    st = pod.wait_exit(ctr)
    assert st.exit_code == 137
    pod.remove_container(ctr)
    pod.containers.remove(ctr)
    assert not ctr_dir.exists()
    pod.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    pod.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    wait_until("the pod cgroup to go", lambda: not pod_dir.exists(), timeout=30)
    if daemon.cgroup_driver == "systemd":
        units = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                                f"*{ctr}*", f"{pod_dir.name}"], capture_output=True, text=True,
                               check=True).stdout
        assert units.strip() == "", units


def test_systemctl_restart_loses_nothing(daemon: Daemon, pod: Pod) -> None:
    """`systemctl restart pycri` with pods running: the unit's KillMode reaches only what is in
    the daemon's own cgroup, and every conmon was moved out of it."""
    if not daemon.unit_file:
        pytest.skip("the daemon runs under its systemd unit in the node guest only")
    ctr = pod.run("kept", ["sleep", "1000"])
    monitor = monitor_of(daemon, ctr)
    assert daemon.proc is not None
    old_pid = daemon.proc.pid
    # Type=notify: returns once the new daemon said it is ready.
    subprocess.run(["systemctl", "restart", daemon.unit], check=True)
    assert daemon.proc.pid != old_pid
    assert pod.status(ctr).status.state == S.CONTAINER_RUNNING
    assert pod.exec(ctr, ["echo", "kept"]).stdout == b"kept\n"
    os.kill(monitor, 0)
    listed = pod.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    assert pod.id in [p.id for p in listed]


def test_a_pod_in_a_kubelet_slice_nests_under_it(daemon: Daemon, image: str,
                                                 tmp_path: Path) -> None:
    """A kubelet with the systemd driver hands over slice names (kubepods-besteffort-pod<uid>
    .slice): the pod's cgroup sits under the kubelet's parents, its containers and monitors
    below it, and pycri removes only what it made."""
    if daemon.cgroup_driver != "systemd":
        pytest.skip("slices are the systemd driver's")
    top = f"kubepods{daemon.tag}"  # a kubelet's own top slice, made unique for the test
    cfg = pod_config()
    parent = f"{top}-besteffort-pod{cfg.metadata.uid}.slice"
    # The kubelet makes the pod's slice before it asks for the pod, through systemd's API.
    subprocess.run(["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                    "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
                    parent, "fail", "0", "0"], check=True, capture_output=True)
    cfg.linux.cgroup_parent = parent
    pod = start_pod(daemon, tmp_path, cfg)
    try:
        ctr = pod.run("app", ["sleep", "1000"])
        ctr_dir = cgroup_dir(ctr_cgroup(pod, ctr))
        assert ctr_dir.relative_to(V2).parts == (
            f"{top}.slice", f"{top}-besteffort.slice", parent, f"pycri-{ctr}.scope")
        monitor = cgroup_of(monitor_of(daemon, ctr))
        assert monitor == f"/{top}.slice/{top}-besteffort.slice/{parent}/pycri-conmon-{ctr}.scope"
        remove_pod(pod)
        # The kubelet's slice is the kubelet's to remove; its pod cgroups inside are gone.
        kept = V2 / f"{top}.slice" / f"{top}-besteffort.slice" / parent
        assert kept.is_dir() and not [p for p in kept.iterdir() if p.is_dir()]
    finally:
        subprocess.run(["systemctl", "stop", f"{top}.slice"], check=False)


def test_pods_given_a_shared_parent_slice_each_get_their_own(daemon: Daemon, image: str,
                                                             tmp_path: Path) -> None:
    """critest hands every pod cgroup_parent "/test.slice", a slice nobody made: each pod gets
    a slice of its own below it, so removing one pod touches no other."""
    if daemon.cgroup_driver != "systemd":
        pytest.skip("slices are the systemd driver's")
    shared = f"shared{daemon.tag}.slice"
    pods: list[Pod] = []
    try:
        for i in range(2):
            cfg = pod_config()
            cfg.linux.cgroup_parent = f"/{shared}"
            pods.append(start_pod(daemon, tmp_path / str(i), cfg))
        slices = [pod_cgroup(p) for p in pods]
        assert slices == [f"shared{daemon.tag}-pod{p.config.metadata.uid}.slice" for p in pods]
        for s in slices:
            assert read(cgroup_dir(s), "memory.swap.max") == "0"
        remove_pod(pods.pop(0))
        assert not cgroup_dir(slices[0]).exists() and cgroup_dir(slices[1]).is_dir()
        assert pods[0].rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=pods[0].id), timeout=10).status.state == api_pb2.SANDBOX_READY
    finally:
        for p in pods:
            remove_pod(p)
        subprocess.run(["systemctl", "stop", shared], check=False)
