"""The cgroup and /proc readings behind the CRI metrics (cAdvisor's container_* families) that
``stats.read_stats`` does not take: CFS throttling, memory failcnt / peak / mapped / kernel
usage and page faults per scope, block I/O per device, hugetlb, pressure stall totals, the
cgroup's limits as the kernel holds them, its processes, and per-process file descriptors and
soft limits.

Same rules as ``stats``: a cgroup that is gone (or goes while it is read) reads as None, a
value the host does not report is None, never 0.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sandbox.cgroups._fs import DEFAULT_ROOT, KERNEL, CgroupFs, parse_path, walk_dirs
from sandbox.cgroups.layout import V1Layout, V2Layout, cached_detect
from sandbox.cgroups.stats import V1_UNLIMITED_FLOOR, _Reader, _to_int
from sandbox.errors import CgroupError

__all__ = [
    "CgroupMetrics",
    "FdCounts",
    "HugetlbUsage",
    "IoStat",
    "Pressure",
    "block_device_name",
    "count_fds",
    "read_metrics",
    "soft_limits",
]

# Reading a pressure file fails with EOPNOTSUPP when PSI is off for the cgroup (cgroup.pressure
# set to 0, or psi=0 on the kernel command line); that is "not reported", like a missing file.
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP})

# io.stat (v2) keys and the v1 operation names they stand for.
_V2_IO_BYTES = {"rbytes": "Read", "wbytes": "Write", "dbytes": "Discard"}
_V2_IO_OPS = {"rios": "Read", "wios": "Write", "dios": "Discard"}

# v1 names the same counters per I/O scheduler; the first file with any device line wins
# (CFQ on old kernels, then BFQ, then the block layer's throttle accounting, which counts
# every bio whatever the scheduler).
_V1_IO_BYTES = ("blkio.io_service_bytes_recursive", "blkio.bfq.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive")
_V1_IO_OPS = ("blkio.io_serviced_recursive", "blkio.bfq.io_serviced_recursive",
              "blkio.throttle.io_serviced_recursive")


@dataclass(frozen=True)
class IoStat:
    major: int
    minor: int
    op: str  # as v1 names it: "Read", "Write", "Sync", "Async", "Discard", "Total"
    value: int


@dataclass(frozen=True)
class HugetlbUsage:
    pagesize: str  # as the kernel names it in the file names: "2MB", "1GB"
    usage: int
    max_usage: int | None  # v1 only; v2 keeps no peak


@dataclass(frozen=True)
class Pressure:
    resource: str  # "cpu", "memory" or "io"
    some_usec: int | None  # time at least one task was stalled
    full_usec: int | None  # time all non-idle tasks were stalled at once


@dataclass(frozen=True)
class CgroupMetrics:
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    memory_failcnt: int | None = None  # v2: memory.events "max", the same event
    memory_max_usage: int | None = None  # v2: memory.peak, Linux 5.19+
    memory_mapped_file: int | None = None
    memory_kernel_usage: int | None = None
    # Page faults of this cgroup's own tasks, and of it with every cgroup below it. v2 keeps
    # only the hierarchical count; both scopes carry it there.
    page_faults: int | None = None
    major_page_faults: int | None = None
    page_faults_hierarchy: int | None = None
    major_page_faults_hierarchy: int | None = None
    processes: tuple[int, ...] = ()  # every process in the cgroup and below it
    threads_max: int | None = None  # pids.max; None when unlimited
    # Limits as the kernel holds them. None means unlimited (or not reported).
    cpu_shares: int | None = None  # v1 only
    cpu_weight: int | None = None  # v2 only
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    memory_reservation: int | None = None  # v1 memory.soft_limit_in_bytes, v2 memory.min
    memory_swap_limit: int | None = None  # v1: memory+swap (memsw); v2: swap alone
    io_service_bytes: tuple[IoStat, ...] = ()
    io_serviced: tuple[IoStat, ...] = ()
    hugetlb: tuple[HugetlbUsage, ...] = ()
    pressure: tuple[Pressure, ...] = ()


def read_metrics(path: str, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> CgroupMetrics | None:
    """Read cgroup ``path`` (a cgroupfs path such as ``/pycri/pod1/pycri-<id>``).

    None when the cgroup does not exist or a directory of it disappeared while it was read;
    CgroupError for a malformed path or a read failing for another reason than the cgroup going.
    """
    parts = parse_path(path)
    layout = cached_detect(root)
    if isinstance(layout, V2Layout):
        dirs = [layout.root.joinpath(*parts)]
    else:
        dirs = [h.path.joinpath(*parts) for h in layout.hierarchies]
    present = [d for d in dirs if d.is_dir()]
    if not present:
        return None
    reader = _Reader(fs)
    metrics = _read_v2(reader, dirs[0]) if isinstance(layout, V2Layout) else _read_v1(reader, layout, parts)
    if not all(d.is_dir() for d in present):
        return None
    return metrics


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FdCounts:
    fds: int
    sockets: int


def count_fds(pids: Iterable[int], *, proc: Path = Path("/proc")) -> FdCounts:
    """Open file descriptors of ``pids`` together, and how many of them are sockets.

    Processes that exit meanwhile, and descriptors closed between the listing and the readlink,
    are not counted.
    """
    fds = sockets = 0
    for pid in pids:
        try:
            with os.scandir(proc / str(pid) / "fd") as it:
                entries = [e.path for e in it]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except FileNotFoundError:
                continue
            fds += 1
            if target.startswith("socket:"):
                sockets += 1
    return FdCounts(fds=fds, sockets=sockets)


def soft_limits(pid: int, *, proc: Path = Path("/proc")) -> dict[str, int | None] | None:
    """Soft resource limits of ``pid`` from /proc/<pid>/limits, keyed the way cAdvisor labels
    them ("Max open files" -> "max_open_files"); None for "unlimited". None when the process is
    gone."""
    try:
        text = (proc / str(pid) / "limits").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError):
        return None
    out: dict[str, int | None] = {}
    for line in text.splitlines()[1:]:
        # "%-25s %-20s %-20s %-10s": the name has spaces, the columns after it do not.
        name, fields = line[:26].strip(), line[26:].split()
        if not name or not fields:
            continue
        key = name.lower().replace(" ", "_")
        out[key] = None if fields[0] == "unlimited" else _to_int(fields[0])
    return out


def block_device_name(major: int, minor: int, *, sysfs: Path = Path("/sys")) -> str | None:
    """``/dev/<name>`` of block device major:minor, as cAdvisor labels devices; None when the
    kernel does not know it (a virtual filesystem's anonymous device, an unplugged disk)."""
    try:
        text = (sysfs / "dev" / "block" / f"{major}:{minor}" / "uevent").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return f"/dev/{value}"
    return None


# --- reading ---------------------------------------------------------------------------------


def _limit(value: int | None) -> int | None:
    """A v1 limit, None for "no limit" (-1, or the largest page-aligned value)."""
    if value is None or value < 0 or value >= V1_UNLIMITED_FLOOR:
        return None
    return value


def _processes(r: _Reader, top: Path) -> tuple[int, ...]:
    pids: set[int] = set()
    for d in walk_dirs(top):
        for word in (r.text(d / "cgroup.procs") or "").split():
            pid = _to_int(word)
            if pid is not None:
                pids.add(pid)
    return tuple(sorted(pids))


def _optional_text(fs: CgroupFs, path: Path) -> str | None:
    try:
        return fs.read(path)
    except OSError as exc:
        if exc.errno in _ABSENT_ERRNOS:
            return None
        raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc


def _pressure(fs: CgroupFs, d: Path) -> tuple[Pressure, ...]:
    out = []
    for resource in ("cpu", "memory", "io"):
        text = _optional_text(fs, d / f"{resource}.pressure")
        if text is None:
            continue
        totals: dict[str, int | None] = {}
        for line in text.splitlines():
            kind, *fields = line.split() or [""]
            for field in fields:
                key, _, value = field.partition("=")
                if key == "total":
                    totals[kind] = _to_int(value)
        out.append(Pressure(resource, totals.get("some"), totals.get("full")))
    return tuple(out)


def _v1_io(r: _Reader, d: Path, names: tuple[str, ...]) -> tuple[IoStat, ...]:
    for name in names:
        stats = []
        for line in (r.text(d / name) or "").splitlines():
            fields = line.split()
            # "8:0 Read 4096"; the closing "Total 4096" line has no device.
            if len(fields) != 3:
                continue
            major, sep, minor = fields[0].partition(":")
            value = _to_int(fields[2])
            if sep and major.isdigit() and minor.isdigit() and value is not None:
                stats.append(IoStat(int(major), int(minor), fields[1], value))
        if stats:
            return tuple(stats)
    return ()


def _v2_io(r: _Reader, d: Path) -> tuple[tuple[IoStat, ...], tuple[IoStat, ...]]:
    nbytes: list[IoStat] = []
    nops: list[IoStat] = []
    for line in (r.text(d / "io.stat") or "").splitlines():
        device, *fields = line.split() or [""]
        major, sep, minor = device.partition(":")
        if not (sep and major.isdigit() and minor.isdigit()):
            continue
        for field in fields:
            key, _, text = field.partition("=")
            value = _to_int(text)
            if value is None:
                continue
            if key in _V2_IO_BYTES:
                nbytes.append(IoStat(int(major), int(minor), _V2_IO_BYTES[key], value))
            elif key in _V2_IO_OPS:
                nops.append(IoStat(int(major), int(minor), _V2_IO_OPS[key], value))
    return tuple(nbytes), tuple(nops)


def _hugetlb(r: _Reader, d: Path, usage_suffix: str, max_suffix: str | None) -> tuple[HugetlbUsage, ...]:
    """hugetlb.<size>.<usage_suffix> for every page size the directory lists (the
    hugetlb.<size>.rsvd.* files have four dotted parts and are left out)."""
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return ()
    out = []
    for name in names:
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "hugetlb" or parts[2] != usage_suffix:
            continue
        usage = r.number(d / name)
        if usage is None:
            continue
        peak = r.number(d / f"hugetlb.{parts[1]}.{max_suffix}") if max_suffix else None
        out.append(HugetlbUsage(parts[1], usage, peak))
    return tuple(out)


def _read_v1(r: _Reader, layout: V1Layout, parts: tuple[str, ...]) -> CgroupMetrics:
    def where(controller: str) -> Path | None:
        base = layout.dir_of(controller)
        return None if base is None else base.joinpath(*parts)

    cpu: dict[str, int] = {}
    shares = quota = period = None
    cpu_dir = where("cpu")
    if cpu_dir is not None:
        cpu = r.keyed(cpu_dir / "cpu.stat")
        shares = r.number(cpu_dir / "cpu.shares")
        quota = _limit(r.number(cpu_dir / "cpu.cfs_quota_us"))
        period = r.number(cpu_dir / "cpu.cfs_period_us")

    mem: dict[str, int] = {}
    failcnt = max_usage = kernel = reservation = swap_limit = None
    mem_dir = where("memory")
    if mem_dir is not None:
        mem = r.keyed(mem_dir / "memory.stat")
        failcnt = r.number(mem_dir / "memory.failcnt")
        max_usage = r.number(mem_dir / "memory.max_usage_in_bytes")
        kernel = r.number(mem_dir / "memory.kmem.usage_in_bytes")
        reservation = _limit(r.number(mem_dir / "memory.soft_limit_in_bytes"))
        swap_limit = _limit(r.number(mem_dir / "memory.memsw.limit_in_bytes"))

    threads_max = None
    pids_dir = where("pids")
    if pids_dir is not None:
        threads_max = r.number(pids_dir / "pids.max")  # "max" reads as None
    counted = next((d for d in (pids_dir, where("cpuacct"), mem_dir) if d is not None),
                   layout.hierarchies[0].path.joinpath(*parts))

    io_bytes: tuple[IoStat, ...] = ()
    io_ops: tuple[IoStat, ...] = ()
    blkio = where("blkio")
    if blkio is not None:
        io_bytes = _v1_io(r, blkio, _V1_IO_BYTES)
        io_ops = _v1_io(r, blkio, _V1_IO_OPS)

    # A hybrid host's cgroup2 mount carries the PSI files (core files there, controllers or
    # not) and, when enabled there, hugetlb.
    unified = None if layout.unified is None else layout.unified.joinpath(*parts)
    hugetlb_dir = where("hugetlb")
    if hugetlb_dir is not None:
        hugetlb = _hugetlb(r, hugetlb_dir, "usage_in_bytes", "max_usage_in_bytes")
    elif unified is not None:
        hugetlb = _hugetlb(r, unified, "current", None)
    else:
        hugetlb = ()

    return CgroupMetrics(
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_ns=cpu.get("throttled_time"),
        memory_failcnt=failcnt,
        memory_max_usage=max_usage,
        memory_mapped_file=mem.get("total_mapped_file", mem.get("mapped_file")),
        memory_kernel_usage=kernel,
        page_faults=mem.get("pgfault"),
        major_page_faults=mem.get("pgmajfault"),
        page_faults_hierarchy=mem.get("total_pgfault", mem.get("pgfault")),
        major_page_faults_hierarchy=mem.get("total_pgmajfault", mem.get("pgmajfault")),
        processes=_processes(r, counted),
        threads_max=threads_max,
        cpu_shares=shares,
        cpu_quota_us=quota,
        cpu_period_us=period,
        memory_reservation=reservation,
        memory_swap_limit=swap_limit,
        io_service_bytes=io_bytes,
        io_serviced=io_ops,
        hugetlb=hugetlb,
        pressure=_pressure(r.fs, unified) if unified is not None and unified.is_dir() else (),
    )


# Kernels before 5.18 have no "kernel" key in memory.stat; these add up to it.
_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "percpu", "vmalloc", "slab")


def _read_v2(r: _Reader, d: Path) -> CgroupMetrics:
    cpu = r.keyed(d / "cpu.stat")
    mem = r.keyed(d / "memory.stat")
    kernel = mem.get("kernel")
    if kernel is None and any(k in mem for k in _V2_KERNEL_PARTS):
        kernel = sum(mem.get(k, 0) for k in _V2_KERNEL_PARTS)
    quota = period = None
    fields = (r.text(d / "cpu.max") or "").split()
    if len(fields) == 2:
        quota, period = _to_int(fields[0]), _to_int(fields[1])  # "max" quota reads as None
    reservation = r.number(d / "memory.min")
    io_bytes, io_ops = _v2_io(r, d)
    return CgroupMetrics(
        cpu_periods=cpu.get("nr_periods"),
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_throttled_ns=None if "throttled_usec" not in cpu else cpu["throttled_usec"] * 1000,
        memory_failcnt=r.keyed(d / "memory.events").get("max"),
        memory_max_usage=r.number(d / "memory.peak"),
        memory_mapped_file=mem.get("file_mapped"),
        memory_kernel_usage=kernel,
        page_faults=mem.get("pgfault"),
        major_page_faults=mem.get("pgmajfault"),
        page_faults_hierarchy=mem.get("pgfault"),
        major_page_faults_hierarchy=mem.get("pgmajfault"),
        processes=_processes(r, d),
        threads_max=r.number(d / "pids.max"),
        cpu_weight=r.number(d / "cpu.weight"),
        cpu_quota_us=quota,
        cpu_period_us=period,
        memory_reservation=reservation or None,  # 0 is memory.min's "no reservation"
        memory_swap_limit=r.number(d / "memory.swap.max"),
        io_service_bytes=io_bytes,
        io_serviced=io_ops,
        hugetlb=_hugetlb(r, d, "current", None),
        pressure=_pressure(r.fs, d),
    )
