from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import KernelFs, V1Layout, V2Layout
from sandbox.cgroups.stats import CgroupStats, CpuRate, read_stats, usage_nano_cores
from sandbox.errors import CgroupError

POD = "/kubepods/burstable/pod1234"
CTR = f"{POD}/pycri-c1"
MiB = 1 << 20
GiB = 1 << 30
UNLIMITED = "9223372036854771712"  # v1's "no limit" with 4 KiB pages


def _write(d: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (d / name).write_text(text)


# --- v1 --------------------------------------------------------------------------------------

# The pod's own counters (unprefixed) are tiny; total_* include its container cgroups.
V1_MEMORY_STAT = """cache 8192
rss 4096
rss_huge 0
shmem 0
mapped_file 0
pgfault 10
pgmajfault 1
inactive_anon 0
active_anon 4096
inactive_file 4096
active_file 4096
unevictable 0
hierarchical_memory_limit 1073741824
hierarchical_memsw_limit 1073741824
total_cache 157286400
total_rss 134217728
total_rss_huge 0
total_shmem 0
total_pgfault 8193245
total_pgmajfault 951
total_inactive_anon 0
total_active_anon 134217728
total_inactive_file 104857600
total_active_file 52428800
total_unevictable 0
"""


def _v1_pod(cgroup_v1: Any, **kwargs: Any) -> tuple[Any, Path]:
    fake = cgroup_v1(**kwargs)
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(CTR, root=fake.root, fs=fake)
    return fake, fake.root


def _v1_dir(root: Path, controller: str, path: str = POD) -> Path:
    return root / controller / path[1:]


def _fill_v1(root: Path) -> None:
    _write(
        _v1_dir(root, "cpuacct"),
        {
            "cpuacct.usage": "350161802556\n",
            "cpuacct.usage_user": "297100000000\n",
            "cpuacct.usage_sys": "53050000000\n",
            "cpuacct.stat": "user 29710\nsystem 5305\n",
        },
    )
    mem = _v1_dir(root, "memory")
    _write(
        mem,
        {
            "memory.usage_in_bytes": f"{300 * MiB}\n",
            "memory.memsw.usage_in_bytes": f"{305 * MiB}\n",
            "memory.stat": V1_MEMORY_STAT,
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        },
    )
    # Processes sit in the container cgroup below the pod; pids.current counts them all.
    _write(_v1_dir(root, "pids"), {"pids.current": "3\n", "cgroup.procs": "", "tasks": ""})
    _write(_v1_dir(root, "pids", CTR), {"cgroup.procs": "101\n102\n", "tasks": "101\n102\n103\n"})


def test_v1_reads_every_field(cgroup_v1: Any) -> None:
    _, root = _v1_pod(cgroup_v1)
    _fill_v1(root)
    stats = read_stats(POD, root=root)
    assert stats is not None
    assert stats.timestamp_ns > 0
    assert (stats.cpu_usage_ns, stats.cpu_user_ns, stats.cpu_system_ns) == (
        350161802556,
        297100000000,
        53050000000,
    )
    assert stats.memory_usage == 300 * MiB
    assert stats.memory_working_set == 200 * MiB  # usage - total_inactive_file
    assert stats.memory_rss == 128 * MiB
    assert stats.memory_cache == 150 * MiB
    assert stats.memory_swap == 5 * MiB
    assert (stats.page_faults, stats.major_page_faults) == (8193245, 951)
    assert stats.memory_limit == GiB
    assert stats.oom_events == 2
    assert stats.pids == 3
    assert stats.threads == 3  # the container cgroup's tasks count for the pod


def test_v1_container_cgroup_is_read_on_its_own(cgroup_v1: Any) -> None:
    _, root = _v1_pod(cgroup_v1)
    _fill_v1(root)
    _write(_v1_dir(root, "memory", CTR), {"memory.usage_in_bytes": "4096\n"})
    stats = read_stats(CTR, root=root)
    assert stats is not None
    assert stats.memory_usage == 4096
    assert stats.memory_limit is None  # runc left it unlimited
    assert stats.pids == 2  # no pids.current in this fake: processes counted instead
    assert stats.threads == 3


def test_v1_combined_cpu_cpuacct_and_tick_fallback(cgroup_v1: Any) -> None:
    _, root = _v1_pod(cgroup_v1, combined=True)
    acct = _v1_dir(root, "cpu,cpuacct")
    # A kernel before 4.7: no usage_user / usage_sys, only the tick counts.
    _write(acct, {"cpuacct.usage": "1000\n", "cpuacct.stat": "user 150\nsystem 25\n"})
    stats = read_stats(POD, root=root)
    assert stats is not None
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert stats.cpu_usage_ns == 1000
    assert (stats.cpu_user_ns, stats.cpu_system_ns) == (150 * tick, 25 * tick)


def test_v1_edges(cgroup_v1: Any) -> None:
    # No swap accounting, no limit, inactive_file above usage, a kernel without oom_kill.
    _, root = _v1_pod(cgroup_v1, swap=False)
    mem = _v1_dir(root, "memory")
    _write(
        mem,
        {
            "memory.limit_in_bytes": UNLIMITED + "\n",
            "memory.usage_in_bytes": "4096\n",
            "memory.stat": "total_inactive_file 8192\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n",
        },
    )
    stats = read_stats(POD, root=root)
    assert stats is not None
    assert stats.memory_limit is None
    assert stats.memory_working_set == 0
    assert stats.memory_swap is None
    assert stats.oom_events is None
    assert stats.memory_rss is None  # memory.stat lacks it: unknown, not 0
    assert stats.pids == 0  # a pod with no processes left
    assert stats.threads == 0


# --- v2 --------------------------------------------------------------------------------------

V2_MEMORY_STAT = """anon 134217728
file 157286400
kernel 2097152
shmem 0
file_mapped 0
inactive_anon 0
active_anon 134217728
inactive_file 104857600
active_file 52428800
pgfault 8193245
pgmajfault 951
"""


def _v2_pod(cgroup_v2: Any, limit: int | None = GiB, **kwargs: Any) -> Path:
    fake = cgroup_v2(**kwargs)
    cgroups.create_pod_cgroup(POD, limit, root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(CTR, root=fake.root, fs=fake)
    root: Path = fake.root
    for path in (POD, CTR):
        _write(root / path[1:], {"cpu.stat": "usage_usec 0\n", "cgroup.threads": ""})
    return root


def test_v2_reads_every_field(cgroup_v2: Any) -> None:
    root = _v2_pod(cgroup_v2)
    pod = root / POD[1:]
    _write(
        pod,
        {
            "cpu.stat": "usage_usec 350161802\nuser_usec 297100000\nsystem_usec 53050000\n"
            "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            "memory.current": f"{300 * MiB}\n",
            "memory.stat": V2_MEMORY_STAT,
            "memory.swap.current": f"{5 * MiB}\n",
            "memory.events": "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n",
            "pids.current": "3\n",
        },
    )
    _write(root / CTR[1:], {"cgroup.procs": "101\n102\n", "cgroup.threads": "101\n102\n103\n"})
    stats = read_stats(POD, root=root)
    assert stats == CgroupStats(
        timestamp_ns=stats.timestamp_ns if stats else 0,
        cpu_usage_ns=350161802000,
        cpu_user_ns=297100000000,
        cpu_system_ns=53050000000,
        memory_usage=300 * MiB,
        memory_working_set=200 * MiB,
        memory_rss=128 * MiB,
        memory_cache=150 * MiB,
        memory_swap=5 * MiB,
        page_faults=8193245,
        major_page_faults=951,
        memory_limit=GiB,
        oom_events=2,
        pids=3,
        threads=3,
    )


def test_v2_without_pids_or_memory_controllers(cgroup_v2: Any) -> None:
    root = _v2_pod(cgroup_v2, None, controllers="cpu cpuset io")
    _write(root / CTR[1:], {"cgroup.procs": "101\n102\n", "cgroup.threads": "101\n102\n103\n"})
    stats = read_stats(POD, root=root)
    assert stats is not None
    assert stats.cpu_usage_ns == 0
    assert stats.memory_usage is None
    assert stats.memory_working_set is None
    assert stats.memory_limit is None
    assert stats.oom_events is None
    assert (stats.pids, stats.threads) == (2, 3)


def test_v2_memory_max_reads_max_as_no_limit(cgroup_v2: Any) -> None:
    root = _v2_pod(cgroup_v2)
    _write(root / CTR[1:], {"memory.current": "0\n"})
    assert (root / CTR[1:] / "memory.max").read_text().strip() == "max"
    stats = read_stats(CTR, root=root)
    assert stats is not None
    assert stats.memory_limit is None
    assert stats.memory_usage == 0
    assert stats.memory_working_set == 0


# --- cgroups that are not there --------------------------------------------------------------


class _RemovesOnRead(KernelFs):
    """Plays runc deleting the cgroup just as memory.stat is about to be read."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    def read(self, path: Path) -> str:
        if path.name == "memory.stat":
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)
        return super().read(path)


class _FailsOn(KernelFs):
    def __init__(self, name: str, err: int) -> None:
        self.name, self.err = name, err

    def read(self, path: Path) -> str:
        if path.name == self.name:
            raise OSError(self.err, os.strerror(self.err), str(path))
        return super().read(path)


@pytest.mark.parametrize("version", [1, 2])
def test_missing_and_vanishing_cgroups_read_as_none(cgroup_v1: Any, cgroup_v2: Any, version: int) -> None:
    if version == 1:
        _, root = _v1_pod(cgroup_v1)
        _fill_v1(root)
    else:
        root = _v2_pod(cgroup_v2)
        _write(root / POD[1:], {"memory.stat": V2_MEMORY_STAT})
    assert read_stats("/kubepods/burstable/pod-never-made", root=root) is None
    assert read_stats(POD, root=root) is not None
    dirs = cgroups.pod_cgroup_dirs(POD, root=root)
    assert read_stats(POD, root=root, fs=_RemovesOnRead(dirs)) is None
    assert not any(d.exists() for d in dirs)
    assert read_stats(POD, root=root) is None


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_of_a_dying_cgroup_is_a_missing_value_other_errors_raise(
    cgroup_v1: Any, cgroup_v2: Any, version: int
) -> None:
    if version == 1:
        _, root = _v1_pod(cgroup_v1)
        _fill_v1(root)
    else:
        root = _v2_pod(cgroup_v2)
        _write(root / POD[1:], {"memory.stat": V2_MEMORY_STAT})
    # ENODEV: the file was opened just before rmdir; the directory still answers is_dir().
    stats = read_stats(POD, root=root, fs=_FailsOn("memory.stat", errno.ENODEV))
    assert stats is not None
    assert stats.memory_rss is None
    assert stats.memory_usage is not None
    with pytest.raises(CgroupError, match=r"memory\.stat"):
        read_stats(POD, root=root, fs=_FailsOn("memory.stat", errno.EACCES))


def test_malformed_path_is_refused(cgroup_v2: Any) -> None:
    root = _v2_pod(cgroup_v2)
    for path in ("kubepods", "/kubepods/../etc", "/"):
        with pytest.raises(CgroupError):
            read_stats(path, root=root)


# --- CPU rate ------------------------------------------------------------------------------------


def _sample(ts: int, cpu: int | None) -> CgroupStats:
    return CgroupStats(timestamp_ns=ts, cpu_usage_ns=cpu)


def test_usage_nano_cores() -> None:
    # 1.5 s of CPU over 2 s is three quarters of a core.
    assert usage_nano_cores(_sample(1_000_000_000, 10), _sample(3_000_000_000, 1_500_000_010)) == 750_000_000
    # Two full cores.
    assert usage_nano_cores(_sample(0, 0), _sample(500, 1000)) == 2_000_000_000
    assert usage_nano_cores(None, _sample(1, 1)) is None
    assert usage_nano_cores(_sample(1, None), _sample(2, 5)) is None
    assert usage_nano_cores(_sample(1, 5), _sample(2, None)) is None
    assert usage_nano_cores(_sample(5, 1), _sample(5, 2)) is None  # no time passed
    assert usage_nano_cores(_sample(6, 1), _sample(5, 2)) is None  # clock stepped back
    assert usage_nano_cores(_sample(1, 9), _sample(2, 3)) is None  # counter restarted


def test_cpu_rate_uses_the_previous_sample() -> None:
    rate = CpuRate()
    assert rate.update(_sample(0, 0)) is None
    assert rate.update(_sample(1_000_000_000, 250_000_000)) == 250_000_000
    assert rate.update(_sample(2_000_000_000, 1_250_000_000)) == 1_000_000_000
    assert rate.update(_sample(3_000_000_000, 100)) is None  # recreated cgroup: new baseline
    assert rate.update(_sample(4_000_000_000, 500_000_100)) == 500_000_000


def test_cpu_rate_of_back_to_back_samples_uses_a_longer_window() -> None:
    """ListContainerStats then ListPodSandboxStats a few ms apart: the second rate is taken over
    the window before the first (not over 5 ms), and the close sample is not kept."""
    rate = CpuRate()
    s = 1_000_000_000
    assert rate.update(_sample(0, 0)) is None
    assert rate.update(_sample(10 * s, 5 * s)) == s // 2
    # 5 ms later, 1 ms of CPU more: against the sample before (10 s + 5 ms earlier).
    assert rate.update(_sample(10 * s + 5_000_000, 5 * s + 1_000_000)) == (
        (5 * s + 1_000_000) * s // (10 * s + 5_000_000))
    # The next normal sample is against the last kept one (at 10 s).
    assert rate.update(_sample(20 * s, 15 * s)) == s
    # Close to the very first sample, with nothing before it: against that one.
    fresh = CpuRate()
    fresh.update(_sample(0, 0))
    assert fresh.update(_sample(500_000_000, 250_000_000)) == s // 2
    assert fresh.update(_sample(2 * s, 1_000_000_000)) == s // 2  # 0 -> 2 s: still kept baseline
    # A restarted counter, even close to the last sample, starts over.
    assert rate.update(_sample(20 * s + 1, 5)) is None
    assert rate.update(_sample(22 * s, 2 * s + 5)) == s


# --- the real thing -----------------------------------------------------------------------------

REAL = Path("/sys/fs/cgroup")
UNIFIED = REAL / "unified"


def _real_layout(root: Path) -> V1Layout | V2Layout | None:
    if os.geteuid() != 0:
        return None
    try:
        return cgroups.detect(root)
    except (CgroupError, OSError):
        return None


# Moved into the cgroup, the child fills 32 MiB (charged there: memory is charged where the
# process is when it faults the pages in), says "go" and waits: a steady state to measure.
# Recent kernels fold small memory.stat changes in lazily (every ~2 s); this many pages is
# far above the per-CPU batch that makes reading memory.stat fold them in at once.
_CHILD = """
import sys
sys.stdin.readline()
buf = b"a" * (32 << 20)
print("go", flush=True)
sys.stdin.readline()
"""


def _run_in_cgroup(path: str, root: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    cgroups.add_pid(path, proc.pid, root=root)
    proc.stdin.write(b"x\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"go\n"
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _cleanup(root_dirs: list[Path], top: str, pod: str) -> None:
    for base in root_dirs:
        for d in (base / pod[1:], base / top[1:]):
            if d.is_dir():
                d.rmdir()


_v1_real = _real_layout(REAL)


@pytest.mark.skipif(
    not isinstance(_v1_real, V1Layout) or _v1_real.dir_of("memory") is None,
    reason="needs root on a cgroup v1 host with the memory controller",
)
def test_real_v1_stats_of_a_process() -> None:
    assert isinstance(_v1_real, V1Layout)
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod = f"{top}/pod{uuid.uuid4().hex[:12]}"
    limit = 256 * MiB
    proc: subprocess.Popen[bytes] | None = None
    try:
        cgroups.create_pod_cgroup(pod, limit, root=REAL)
        proc = _run_in_cgroup(pod, REAL)
        stats = read_stats(pod, root=REAL)
        assert stats is not None
        assert stats.memory_limit == limit
        assert stats.pids == 1
        assert stats.threads == 1
        assert stats.cpu_usage_ns is not None and stats.cpu_usage_ns > 0
        assert stats.cpu_user_ns is not None and stats.cpu_system_ns is not None
        assert stats.memory_usage is not None and stats.memory_usage >= 32 * MiB
        assert stats.memory_working_set is not None and stats.memory_working_set >= 32 * MiB
        assert stats.memory_rss is not None and stats.memory_rss >= 32 * MiB
        assert stats.page_faults is not None and stats.page_faults > 0
        assert stats.oom_events == 0
        if (REAL / "memory" / pod[1:] / "memory.memsw.usage_in_bytes").exists():
            assert stats.memory_swap == 0  # the pod has swap disabled

        assert proc.stdin is not None
        proc.stdin.write(b"y\n")
        proc.stdin.flush()
        assert proc.wait() == 0
        cgroups.remove_pod_cgroup(pod, root=REAL)
        assert read_stats(pod, root=REAL) is None
    finally:
        if proc is not None:
            _finish(proc)
        _cleanup([h.path for h in _v1_real.hierarchies], top, pod)


_unified_real = _real_layout(UNIFIED)


@pytest.mark.skipif(
    not isinstance(_unified_real, V2Layout), reason="needs root and a cgroup2 mount at " + str(UNIFIED)
)
def test_real_cgroup2_stats_of_a_process() -> None:
    # The hybrid host's cgroup2 mount carries no controllers, but cpu.stat, cgroup.procs and
    # cgroup.threads are core files: CPU and the counts work, memory reads as unknown.
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod = f"{top}/pod{uuid.uuid4().hex[:12]}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        cgroups.create_pod_cgroup(pod, root=UNIFIED)
        # The process goes into a leaf, as a container does: a pod cgroup that enables
        # controllers for its children may hold no process itself (v2).
        leaf = f"{pod}/ctr"
        (UNIFIED / leaf.lstrip("/")).mkdir()
        proc = _run_in_cgroup(leaf, UNIFIED)
        stats = read_stats(leaf, root=UNIFIED)
        assert stats is not None
        assert stats.cpu_usage_ns is not None and stats.cpu_usage_ns > 0
        assert (stats.pids, stats.threads) == (1, 1)
        if isinstance(_unified_real, V2Layout) and "memory" not in _unified_real.controllers:
            assert stats.memory_usage is None
        _finish(proc)
        cgroups.remove_pod_cgroup(pod, root=UNIFIED)
        assert read_stats(pod, root=UNIFIED) is None
    finally:
        if proc is not None:
            _finish(proc)
        _cleanup([UNIFIED], top, pod)
