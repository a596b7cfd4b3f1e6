from __future__ import annotations

import errno
import os
import resource
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import KernelFs, V1Layout
from sandbox.cgroups.metrics import (
    CgroupMetrics,
    FdCounts,
    HugetlbUsage,
    IoStat,
    Pressure,
    block_device_name,
    count_fds,
    read_metrics,
    soft_limits,
)
from sandbox.errors import CgroupError

POD = "/kubepods/burstable/pod1234"
CTR = f"{POD}/pycri-c1"
MiB = 1 << 20
UNLIMITED = "9223372036854771712"


def _write(d: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (d / name).write_text(text)


# --- v1 (hybrid: the cgroup2 mount carries PSI and hugetlb) -----------------------------------

V1_MEMORY_STAT = """cache 8192
rss 4096
mapped_file 4096
pgfault 10
pgmajfault 1
total_cache 157286400
total_rss 134217728
total_mapped_file 1048576
total_pgfault 8193245
total_pgmajfault 951
"""

# Two schedulers' files: the CFQ one (tried first) is empty, so the throttle one counts.
V1_THROTTLE_BYTES = """8:0 Read 4096
8:0 Write 8192
8:0 Sync 12288
8:0 Async 0
8:0 Discard 0
8:0 Total 12288
253:1 Read 512
Total 12800
"""
V1_THROTTLE_OPS = "8:0 Read 1\n8:0 Write 2\nTotal 3\n"


def _v1_tree(cgroup_v1: Any) -> Path:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(CTR, root=fake.root, fs=fake)
    root: Path = fake.root
    d = {c: root / c / POD[1:] for c in ("cpu", "memory", "pids", "blkio", "unified")}
    _write(d["cpu"], {
        "cpu.stat": "nr_periods 50\nnr_throttled 7\nthrottled_time 1500000000\nnr_bursts 0\n",
        "cpu.shares": "512\n",
        "cpu.cfs_quota_us": "20000\n",
        "cpu.cfs_period_us": "100000\n",
    })
    _write(d["memory"], {
        "memory.stat": V1_MEMORY_STAT,
        "memory.failcnt": "3\n",
        "memory.max_usage_in_bytes": f"{300 * MiB}\n",
        "memory.kmem.usage_in_bytes": f"{2 * MiB}\n",
        "memory.soft_limit_in_bytes": UNLIMITED + "\n",
        "memory.memsw.limit_in_bytes": f"{64 * MiB}\n",
    })
    _write(d["blkio"], {
        "blkio.io_service_bytes_recursive": "Total 0\n",
        "blkio.throttle.io_service_bytes_recursive": V1_THROTTLE_BYTES,
        "blkio.throttle.io_serviced_recursive": V1_THROTTLE_OPS,
    })
    _write(d["unified"], {
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n",
        "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
        # No io.pressure: a missing file is an absent value.
        "hugetlb.2MB.current": "4194304\n",
        "hugetlb.2MB.rsvd.current": "0\n",
        "hugetlb.2MB.max": "max\n",
    })
    # The processes live in the container cgroup below the pod.
    _write(root / "pids" / CTR[1:], {"cgroup.procs": "102\n101\n"})
    return root


def test_v1_reads_every_field(cgroup_v1: Any) -> None:
    root = _v1_tree(cgroup_v1)
    assert read_metrics(POD, root=root) == CgroupMetrics(
        cpu_periods=50,
        cpu_throttled_periods=7,
        cpu_throttled_ns=1500000000,
        memory_failcnt=3,
        memory_max_usage=300 * MiB,
        memory_mapped_file=MiB,  # total_ (hierarchy) wins over the pod's own
        memory_kernel_usage=2 * MiB,
        page_faults=10,
        major_page_faults=1,
        page_faults_hierarchy=8193245,
        major_page_faults_hierarchy=951,
        processes=(101, 102),
        threads_max=None,  # pids.max "max"
        cpu_shares=512,
        cpu_weight=None,
        cpu_quota_us=20000,
        cpu_period_us=100000,
        memory_reservation=None,
        memory_swap_limit=64 * MiB,
        io_service_bytes=(
            IoStat(8, 0, "Read", 4096), IoStat(8, 0, "Write", 8192), IoStat(8, 0, "Sync", 12288),
            IoStat(8, 0, "Async", 0), IoStat(8, 0, "Discard", 0), IoStat(8, 0, "Total", 12288),
            IoStat(253, 1, "Read", 512),
        ),
        io_serviced=(IoStat(8, 0, "Read", 1), IoStat(8, 0, "Write", 2)),
        hugetlb=(HugetlbUsage("2MB", 4 * MiB, None),),
        pressure=(Pressure("cpu", 2500000, 1000), Pressure("memory", 7, 3)),
    )


def test_v1_cfq_counters_win_when_they_have_devices_and_limits_read_as_such(cgroup_v1: Any) -> None:
    root = _v1_tree(cgroup_v1)
    _write(root / "blkio" / POD[1:], {"blkio.io_service_bytes_recursive": "8:16 Write 1\nTotal 1\n"})
    _write(root / "cpu" / POD[1:], {"cpu.cfs_quota_us": "-1\n"})
    _write(root / "pids" / POD[1:], {"pids.max": "64\n"})
    _write(root / "memory" / POD[1:], {"memory.soft_limit_in_bytes": f"{32 * MiB}\n",
                                       "memory.memsw.limit_in_bytes": UNLIMITED + "\n"})
    m = read_metrics(POD, root=root)
    assert m is not None
    assert m.io_service_bytes == (IoStat(8, 16, "Write", 1),)
    assert m.io_serviced == (IoStat(8, 0, "Read", 1), IoStat(8, 0, "Write", 2))
    assert (m.cpu_quota_us, m.threads_max) == (None, 64)
    assert (m.memory_reservation, m.memory_swap_limit) == (32 * MiB, None)


def test_v1_container_cgroup_alone(cgroup_v1: Any) -> None:
    root = _v1_tree(cgroup_v1)
    m = read_metrics(CTR, root=root)
    assert m is not None
    assert m.processes == (101, 102)
    assert m.cpu_periods is None  # nothing written there: unknown, not 0
    assert m.pressure == ()
    assert m.io_service_bytes == ()


# --- v2 --------------------------------------------------------------------------------------

V2_MEMORY_STAT = """anon 134217728
file 157286400
kernel 2097152
kernel_stack 65536
slab 1048576
file_mapped 8192
pgfault 8193245
pgmajfault 951
"""


def _v2_tree(cgroup_v2: Any) -> Path:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, cpu_shares=1024, cpu_quota=50000, cpu_period=100000,
                              root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(CTR, root=fake.root, fs=fake)
    root: Path = fake.root
    _write(root / POD[1:], {
        "cpu.stat": "usage_usec 1\nuser_usec 1\nsystem_usec 0\nnr_periods 9\nnr_throttled 4\n"
        "throttled_usec 2500\n",
        "memory.stat": V2_MEMORY_STAT,
        "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        "memory.peak": f"{310 * MiB}\n",
        "memory.min": f"{16 * MiB}\n",
        "pids.max": "128\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
        "253:1 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        "hugetlb.1GB.current": "0\n",
        "hugetlb.2MB.current": "2097152\n",
        "hugetlb.2MB.events": "max 0\n",
        "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=40\n",
        "io.pressure": "some avg10=1.00 avg60=0.00 avg300=0.00 total=50\n"
        "full avg10=1.00 avg60=0.00 avg300=0.00 total=20\n",
    })
    _write(root / CTR[1:], {"cgroup.procs": "7\n"})
    return root


def test_v2_reads_every_field(cgroup_v2: Any) -> None:
    root = _v2_tree(cgroup_v2)
    assert read_metrics(POD, root=root) == CgroupMetrics(
        cpu_periods=9,
        cpu_throttled_periods=4,
        cpu_throttled_ns=2_500_000,
        memory_failcnt=5,
        memory_max_usage=310 * MiB,
        memory_mapped_file=8192,
        memory_kernel_usage=2 * MiB,
        page_faults=8193245,
        major_page_faults=951,
        page_faults_hierarchy=8193245,
        major_page_faults_hierarchy=951,
        processes=(7,),
        threads_max=128,
        cpu_shares=None,
        cpu_weight=100,  # what create_pod_cgroup made of 1024 shares
        cpu_quota_us=50000,
        cpu_period_us=100000,
        memory_reservation=16 * MiB,
        memory_swap_limit=0,  # swap disabled by create_pod_cgroup
        io_service_bytes=(IoStat(8, 0, "Read", 4096), IoStat(8, 0, "Write", 8192),
                          IoStat(8, 0, "Discard", 0), IoStat(253, 1, "Read", 512),
                          IoStat(253, 1, "Write", 0), IoStat(253, 1, "Discard", 0)),
        io_serviced=(IoStat(8, 0, "Read", 1), IoStat(8, 0, "Write", 2), IoStat(8, 0, "Discard", 0),
                     IoStat(253, 1, "Read", 1), IoStat(253, 1, "Write", 0),
                     IoStat(253, 1, "Discard", 0)),
        hugetlb=(HugetlbUsage("1GB", 0, None), HugetlbUsage("2MB", 2 * MiB, None)),
        pressure=(Pressure("cpu", 40, None), Pressure("io", 50, 20)),
    )


def test_v2_older_kernels_and_unlimited_values(cgroup_v2: Any) -> None:
    root = _v2_tree(cgroup_v2)
    _write(root / POD[1:], {
        # Before 5.18 memory.stat has no "kernel" line: its parts add up to it.
        "memory.stat": "kernel_stack 65536\nslab 1048576\npagetables 4096\npercpu 512\n",
        "cpu.max": "max 100000\n",
        "memory.min": "0\n",
        "pids.max": "max\n",
    })
    (root / POD[1:] / "memory.peak").unlink()  # before 5.19
    m = read_metrics(POD, root=root)
    assert m is not None
    assert m.memory_kernel_usage == 65536 + 1048576 + 4096 + 512
    assert m.memory_max_usage is None
    assert (m.cpu_quota_us, m.cpu_period_us) == (None, 100000)
    assert (m.memory_reservation, m.threads_max) == (None, None)


class _FailsOn(KernelFs):
    def __init__(self, name: str, err: int) -> None:
        self.name, self.err = name, err

    def read(self, path: Path) -> str:
        if path.name == self.name:
            raise OSError(self.err, os.strerror(self.err), str(path))
        return super().read(path)


def test_pressure_turned_off_is_absent_other_errors_raise(cgroup_v2: Any) -> None:
    root = _v2_tree(cgroup_v2)
    m = read_metrics(POD, root=root, fs=_FailsOn("io.pressure", errno.EOPNOTSUPP))
    assert m is not None
    assert m.pressure == (Pressure("cpu", 40, None),)
    with pytest.raises(CgroupError, match=r"io\.pressure"):
        read_metrics(POD, root=root, fs=_FailsOn("io.pressure", errno.EACCES))


class _RemovesOnRead(KernelFs):
    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    def read(self, path: Path) -> str:
        if path.name == "memory.stat":
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)
        return super().read(path)


@pytest.mark.parametrize("version", [1, 2])
def test_missing_and_vanishing_cgroups_read_as_none(cgroup_v1: Any, cgroup_v2: Any, version: int) -> None:
    root = _v1_tree(cgroup_v1) if version == 1 else _v2_tree(cgroup_v2)
    assert read_metrics("/kubepods/never-made", root=root) is None
    dirs = cgroups.pod_cgroup_dirs(POD, root=root)
    assert read_metrics(POD, root=root, fs=_RemovesOnRead(dirs)) is None
    assert not any(d.exists() for d in dirs)


# --- /proc and /sys readers --------------------------------------------------------------------


def test_count_fds_of_a_fake_proc(tmp_path: Path) -> None:
    fd = tmp_path / "10" / "fd"
    fd.mkdir(parents=True)
    for n, target in enumerate(("/dev/null", "socket:[1234]", "pipe:[77]", "socket:[99]")):
        (fd / str(n)).symlink_to(target)
    other = tmp_path / "11" / "fd"
    other.mkdir(parents=True)
    (other / "0").symlink_to("anon_inode:[eventfd]")
    # 12 exited before its fds were listed.
    assert count_fds([10, 11, 12], proc=tmp_path) == FdCounts(fds=5, sockets=2)
    assert count_fds([], proc=tmp_path) == FdCounts(fds=0, sockets=0)


def test_count_fds_of_a_real_process() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        open(os.devnull, "rb") as null,
    ):
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, pass_fds=(sock.fileno(), null.fileno()))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # An echoed line means cat is past start-up (the loader's own fds are closed again)
        # and waits on stdin.
        proc.stdin.write(b"x\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"x\n"
        # stdin, stdout, stderr and the two passed on.
        assert count_fds([proc.pid]) == FdCounts(fds=5, sockets=1)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


LIMITS = """\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max processes             63541                63541                processes
"""


def test_soft_limits(tmp_path: Path) -> None:
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "limits").write_text(LIMITS)
    assert soft_limits(5, proc=tmp_path) == {
        "max_cpu_time": None, "max_open_files": 1024, "max_processes": 63541,
    }
    assert soft_limits(6, proc=tmp_path) is None
    mine = soft_limits(os.getpid())
    assert mine is not None
    assert mine["max_open_files"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_block_device_name(tmp_path: Path) -> None:
    d = tmp_path / "dev" / "block" / "8:0"
    d.mkdir(parents=True)
    (d / "uevent").write_text("MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")
    nameless = tmp_path / "dev" / "block" / "8:1"
    nameless.mkdir()
    (nameless / "uevent").write_text("MAJOR=8\nMINOR=1\n")
    assert block_device_name(8, 0, sysfs=tmp_path) == "/dev/sda"
    assert block_device_name(8, 1, sysfs=tmp_path) is None
    assert block_device_name(0, 42, sysfs=tmp_path) is None


# --- the real thing ------------------------------------------------------------------------------

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

# Moved into the cgroup, the child touches 32 MiB, says "go" and waits.
_CHILD = """
import sys
sys.stdin.readline()
buf = b"a" * (32 << 20)
print("go", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(_V1 is None, reason="needs root on a cgroup v1 host with the memory controller")
def test_real_v1_metrics_of_a_process() -> None:
    assert _V1 is not None
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod = f"{top}/pod{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        cgroups.create_pod_cgroup(pod, 256 * MiB, cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                  root=REAL)
        cgroups.add_pid(pod, proc.pid, root=REAL)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"x\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"go\n"
        m = read_metrics(pod, root=REAL)
        assert m is not None
        assert m.processes == (proc.pid,)
        assert (m.cpu_shares, m.cpu_quota_us, m.cpu_period_us) == (512, 50000, 100000)
        assert m.cpu_periods is not None and m.cpu_throttled_periods is not None
        assert m.memory_max_usage is not None and m.memory_max_usage >= 32 * MiB
        assert m.page_faults is not None and m.page_faults > 0
        assert m.page_faults_hierarchy is not None and m.page_faults_hierarchy >= m.page_faults
        assert m.memory_failcnt == 0
        if (REAL / "memory" / pod[1:] / "memory.memsw.limit_in_bytes").exists():
            assert m.memory_swap_limit == 256 * MiB  # memory+swap = memory: swap off
        if _V1.unified is not None and (_V1.unified / pod[1:] / "cpu.pressure").exists():
            assert [p.resource for p in m.pressure] == ["cpu", "memory", "io"]
        assert count_fds(m.processes).fds >= 3
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        for h in _V1.hierarchies:
            for d in (h.path / pod[1:], h.path / top[1:]):
                if d.is_dir():
                    d.rmdir()
