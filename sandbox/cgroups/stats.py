"""Resource usage of one cgroup (a container's or a whole pod's), on cgroup v1 and v2.

The numbers follow what the kubelet and cAdvisor expect from a CRI runtime: cumulative CPU in
nanoseconds, the memory "working set" as usage minus inactive file pages, and counters that
include every cgroup below the one asked for (a pod's processes live in its containers' cgroups).
A cgroup can be removed while it is read (a container exits and runc deletes it); that is not
an error: the reader answers None, as for a cgroup that never existed.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.cgroups._fs import DEFAULT_ROOT, KERNEL, CgroupFs, parse_path, walk_dirs
from sandbox.cgroups.layout import V1Layout, V2Layout, cached_detect
from sandbox.errors import CgroupError

__all__ = ["V1_UNLIMITED_FLOOR", "CgroupStats", "CpuRate", "read_control_file", "read_stats",
           "usage_nano_cores"]

# v1 reports "no limit" as the largest page-aligned counter value (9223372036854771712 with 4 KiB
# pages, a little less with 64 KiB pages). Nothing real is limited to 4 EiB or more.
V1_UNLIMITED_FLOOR = 1 << 62

# A file read from a cgroup that is going away: ENOENT once the directory is gone, ENODEV when it
# was opened just before rmdir.
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV})
# The v1 controllers _read_v1 reads.
_V1_READ = frozenset({"cpuacct", "memory", "pids"})


@dataclass(frozen=True)
class CgroupStats:
    """One sample. None means the host does not report the value (controller not mounted, file
    missing on this kernel, no limit set), never zero."""

    timestamp_ns: int  # wall clock (time.time_ns) when the CPU counters were read
    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    memory_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_swap: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None
    oom_events: int | None = None
    pids: int | None = None
    threads: int | None = None


def read_stats(path: str, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> CgroupStats | None:
    """Sample cgroup ``path`` (a cgroupfs path such as ``/pycri/pod1/pycri-<id>``).

    Returns None when the cgroup does not exist, or when any of its directories disappeared
    while it was read. Raises CgroupError for a malformed path or a read failing for another
    reason than the cgroup going away (e.g. EACCES).
    """
    parts = parse_path(path)
    layout = cached_detect(root)
    if isinstance(layout, V2Layout):
        dirs = [layout.root.joinpath(*parts)]
    else:
        # Only the hierarchies read below (the first one when none of them is mounted).
        read = [h.path for h in layout.hierarchies if h.controllers & _V1_READ]
        dirs = [base.joinpath(*parts) for base in read or [layout.hierarchies[0].path]]
    present = [d for d in dirs if os.path.isdir(d)]
    if not present:
        return None
    reader = _Reader(fs)
    stats = _read_v1(reader, layout, parts) if isinstance(layout, V1Layout) else _read_v2(reader, dirs[0])
    # A half-read cgroup would pair, say, CPU from before the removal with no memory at all.
    if not all(os.path.isdir(d) for d in present):
        return None
    return stats


def usage_nano_cores(prev: CgroupStats | None, cur: CgroupStats) -> int | None:
    """CPU use between two samples in billionths of a core (CRI ``usage_nano_cores``).

    None without a usable earlier sample: the first one, a missing counter, a timestamp that did
    not advance (clock stepped back) or a counter that went backwards (the cgroup was recreated).
    """
    if prev is None or prev.cpu_usage_ns is None or cur.cpu_usage_ns is None:
        return None
    elapsed = cur.timestamp_ns - prev.timestamp_ns
    used = cur.cpu_usage_ns - prev.cpu_usage_ns
    if elapsed <= 0 or used < 0:
        return None
    return used * 1_000_000_000 // elapsed


# Samples closer than this to the last kept one are not kept (see CpuRate).
MIN_RATE_WINDOW_NS = 1_000_000_000


class CpuRate:
    """Remembers earlier samples of one cgroup so each new one yields a rate.

    The kubelet asks for container and pod stats back to back, and both carry the same
    containers: a rate over the few milliseconds between them would be noise. A sample closer
    than MIN_RATE_WINDOW_NS to the last kept one is measured against the one kept before it
    and is not kept itself.
    """

    def __init__(self) -> None:
        self._last: CgroupStats | None = None
        self._prev: CgroupStats | None = None

    def update(self, stats: CgroupStats) -> int | None:
        """Rate since an earlier sample (None for the first, or after the counter restarted)."""
        last = self._last
        if last is not None and stats.timestamp_ns - last.timestamp_ns < MIN_RATE_WINDOW_NS:
            rate = usage_nano_cores(self._prev or last, stats)
            if rate is not None:
                return rate
        else:
            rate = usage_nano_cores(last, stats)
        # A rate of None from a kept sample: the first one, or a recreated cgroup.
        self._prev, self._last = (last, stats) if rate is not None else (None, stats)
        return rate


# --- reading --------------------------------------------------------------------------------


class _Reader:
    def __init__(self, fs: CgroupFs) -> None:
        self.fs = fs

    def text(self, path: Path) -> str | None:
        try:
            return self.fs.read(path)
        except OSError as exc:
            if exc.errno in _GONE_ERRNOS:
                return None
            raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc

    def number(self, path: Path) -> int | None:
        """A single-number file; "max" (v2 for unlimited) reads as None."""
        text = self.text(path)
        return None if text is None else _to_int(text.strip())

    def keyed(self, path: Path) -> dict[str, int]:
        """A flat keyed file (``key value`` per line): memory.stat, cpu.stat, memory.events..."""
        text = self.text(path)
        out: dict[str, int] = {}
        for line in (text or "").splitlines():
            fields = line.split()
            if len(fields) == 2:
                value = _to_int(fields[1])
                if value is not None:
                    out[fields[0]] = value
        return out

    def count_lines(self, top: Path, name: str) -> int | None:
        """Entries in file ``name`` summed over ``top`` and every cgroup below it."""
        total: int | None = None
        for d in walk_dirs(top):
            text = self.text(d / name)
            if text is not None:
                total = (total or 0) + len(text.split())
        return total


def read_control_file(path: Path, fs: CgroupFs = KERNEL) -> str | None:
    """A cgroup file's content; None when it or its cgroup is gone (ENOENT, ENODEV), a
    CgroupError naming it for any other failure."""
    return _Reader(fs).text(path)


def _to_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _scaled(value: int | None, factor: int) -> int | None:
    return None if value is None else value * factor


def _minus(a: int | None, b: int | None) -> int | None:
    """a - b floored at 0; the two files are not read atomically."""
    if a is None:
        return None
    return max(a - (b or 0), 0)


def _read_v2(r: _Reader, d: Path) -> CgroupStats:
    timestamp = time.time_ns()
    cpu = r.keyed(d / "cpu.stat")  # present with or without the cpu controller
    mem = r.keyed(d / "memory.stat")
    usage = r.number(d / "memory.current")
    threads = r.count_lines(d, "cgroup.threads")
    pids = r.number(d / "pids.current")
    return CgroupStats(
        timestamp_ns=timestamp,
        cpu_usage_ns=_scaled(cpu.get("usage_usec"), 1000),
        cpu_user_ns=_scaled(cpu.get("user_usec"), 1000),
        cpu_system_ns=_scaled(cpu.get("system_usec"), 1000),
        memory_usage=usage,
        memory_working_set=_minus(usage, mem.get("inactive_file")),
        memory_rss=mem.get("anon"),
        memory_cache=mem.get("file"),
        memory_swap=r.number(d / "memory.swap.current"),
        page_faults=mem.get("pgfault"),
        major_page_faults=mem.get("pgmajfault"),
        memory_limit=r.number(d / "memory.max"),
        oom_events=r.keyed(d / "memory.events").get("oom_kill"),
        # pids.current counts tasks (threads), as CRI-O and containerd report it; without the
        # pids controller, count the processes instead.
        pids=pids if pids is not None else r.count_lines(d, "cgroup.procs"),
        threads=threads,
    )


def _read_v1(r: _Reader, layout: V1Layout, parts: tuple[str, ...]) -> CgroupStats:
    def where(controller: str) -> Path | None:
        base = layout.dir_of(controller)
        return None if base is None else base.joinpath(*parts)

    timestamp = time.time_ns()
    cpu_usage = cpu_user = cpu_system = None
    acct = where("cpuacct")
    if acct is not None:
        cpu_usage = r.number(acct / "cpuacct.usage")
        cpu_user = r.number(acct / "cpuacct.usage_user")
        cpu_system = r.number(acct / "cpuacct.usage_sys")
        if cpu_user is None or cpu_system is None:
            # Kernels before 4.7 only have cpuacct.stat, in clock ticks (USER_HZ).
            ticks = r.keyed(acct / "cpuacct.stat")
            tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            cpu_user = _scaled(ticks.get("user"), tick_ns)
            cpu_system = _scaled(ticks.get("system"), tick_ns)

    usage = memsw = limit = None
    mem: dict[str, int] = {}
    oom: dict[str, int] = {}
    memory = where("memory")
    if memory is not None:
        usage = r.number(memory / "memory.usage_in_bytes")
        memsw = r.number(memory / "memory.memsw.usage_in_bytes")  # absent without swap accounting
        mem = r.keyed(memory / "memory.stat")
        limit = r.number(memory / "memory.limit_in_bytes")
        oom = r.keyed(memory / "memory.oom_control")  # oom_kill since Linux 4.13

    def total(key: str) -> int | None:
        # The unprefixed keys cover this cgroup alone; total_* include its children.
        return mem.get(f"total_{key}", mem.get(key))

    pids = None
    pids_dir = where("pids")
    if pids_dir is not None:
        pids = r.number(pids_dir / "pids.current")
    # Every hierarchy lists the same tasks (runc joins them all); prefer one that surely has it.
    counted = next((d for d in (pids_dir, acct, memory) if d is not None), None)
    if counted is None:
        counted = layout.hierarchies[0].path.joinpath(*parts)
    if pids is None:
        pids = r.count_lines(counted, "cgroup.procs")
    return CgroupStats(
        timestamp_ns=timestamp,
        cpu_usage_ns=cpu_usage,
        cpu_user_ns=cpu_user,
        cpu_system_ns=cpu_system,
        memory_usage=usage,
        memory_working_set=_minus(usage, total("inactive_file")),
        memory_rss=total("rss"),
        memory_cache=total("cache"),
        memory_swap=None if memsw is None else _minus(memsw, usage),
        page_faults=total("pgfault"),
        major_page_faults=total("pgmajfault"),
        memory_limit=None if limit is None or limit >= V1_UNLIMITED_FLOOR else limit,
        oom_events=oom.get("oom_kill"),
        pids=pids,
        threads=r.count_lines(counted, "tasks"),
    )
