"""cgroup v1 (and hybrid) pod cgroups: one directory per hierarchy, limits per controller."""

from __future__ import annotations

import errno
from pathlib import Path

from sandbox.cgroups._fs import CgroupFs, mkdirs
from sandbox.cgroups.layout import V1Layout
from sandbox.cgroups.resources import Resources


def pod_dirs(layout: V1Layout, parts: tuple[str, ...]) -> list[Path]:
    return [h.path.joinpath(*parts) for h in layout.hierarchies]


def create(
    layout: V1Layout, parts: tuple[str, ...], res: Resources, fs: CgroupFs, made: list[Path]
) -> None:
    """Make the pod directory in every hierarchy and apply ``res``. Dirs made go to ``made``."""
    for h in layout.hierarchies:
        mkdirs(fs, h.path, parts, made)
        if "cpuset" in h.controllers:
            _inherit_cpuset(fs, h.path, parts)
    memory = layout.dir_of("memory")
    if memory is not None:
        _set_memory(fs, memory.joinpath(*parts), res.memory_limit)
    cpu = layout.dir_of("cpu")
    if cpu is not None:
        _set_cpu(fs, cpu.joinpath(*parts), res)


def _inherit_cpuset(fs: CgroupFs, base: Path, parts: tuple[str, ...]) -> None:
    # A v1 cpuset starts with empty cpus and mems (unless cgroup.clone_children is set), and no
    # task can join a cpuset without both. Fill every empty level from its nearest ancestor.
    for name in ("cpuset.cpus", "cpuset.mems"):
        inherited = fs.read(base / name).strip()
        current = base
        for part in parts:
            current = current / part
            value = fs.read(current / name).strip()
            if value:
                inherited = value
            else:
                fs.write(current / name, inherited)


def _set_memory(fs: CgroupFs, pod: Path, limit: int | None) -> None:
    # Swap is disabled for the pod: with memsw (memory+swap) equal to the memory limit swapping
    # frees no room, and swappiness 0 keeps reclaim away from anonymous pages altogether. New
    # child cgroups (the containers) copy the parent's swappiness when they are made.
    memsw = pod / "memory.memsw.limit_in_bytes"
    if limit is not None:
        if not memsw.exists():  # kernel without swap accounting: swappiness is all we have
            fs.write(pod / "memory.limit_in_bytes", str(limit))
        else:
            # The kernel insists on memsw >= limit after every single write: when raising, grow
            # memsw first; when lowering, shrink the limit first.
            current = int(fs.read(pod / "memory.limit_in_bytes"))
            if limit > current:
                fs.write(memsw, str(limit))
                fs.write(pod / "memory.limit_in_bytes", str(limit))
            else:
                fs.write(pod / "memory.limit_in_bytes", str(limit))
                fs.write(memsw, str(limit))
    fs.write(pod / "memory.swappiness", "0")


def _set_cpu(fs: CgroupFs, pod: Path, res: Resources) -> None:
    if res.cpu_shares is not None:
        fs.write(pod / "cpu.shares", str(res.cpu_shares))
    period_pending = False
    if res.cpu_period is not None:
        try:
            fs.write(pod / "cpu.cfs_period_us", str(res.cpu_period))
        except OSError as exc:
            # A shorter period can make the current quota/period ratio exceed the parent's
            # bandwidth (EINVAL); after the quota is written the same period is accepted.
            if exc.errno != errno.EINVAL or res.cpu_quota is None:
                raise
            period_pending = True
    if res.cpu_quota is not None:
        fs.write(pod / "cpu.cfs_quota_us", str(res.cpu_quota))
        if period_pending:
            fs.write(pod / "cpu.cfs_period_us", str(res.cpu_period))
