"""cgroup v2 pod cgroups (one directory, controllers delegated down from the root) and leaf
cgroups for processes of their own."""

from __future__ import annotations

from pathlib import Path

from sandbox.cgroups._fs import CgroupFs, mkdirs
from sandbox.cgroups.layout import V2Layout
from sandbox.cgroups.resources import Resources, shares_to_weight
from sandbox.errors import CgroupError

# What a pod and its containers are limited by; whichever of these a level offers is enabled.
# rdma and misc carry only unified keys (rdma.max, misc.max) a client may set on a container.
WANTED = ("cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma")


def create(
    layout: V2Layout, parts: tuple[str, ...], res: Resources, fs: CgroupFs, made: list[Path]
) -> None:
    """Make the pod directory, delegate controllers to it and apply ``res``."""
    current = _descend(layout, parts, fs, made)
    # And in the pod itself, so the containers' cgroups below it get the controllers too. From
    # here on no process may live in the pod directory itself (v2 "no internal processes"):
    # runc, conmon and the infra container each go into a child.
    _enable(fs, current)
    _set_memory(fs, current, res.memory_limit)
    _set_cpu(fs, current, res)


def create_leaf(layout: V2Layout, parts: tuple[str, ...], fs: CgroupFs, made: list[Path]) -> None:
    """Make a cgroup for processes of its own (conmon's): its controllers enabled in every
    ancestor, so its processes are accounted and limited, and none in its own subtree_control,
    where they would make the kernel refuse every process (EBUSY). Controllers found enabled
    there (an older pycri made the conmon cgroup like a pod's) are turned off again while no
    child cgroup uses them."""
    leaf = _descend(layout, parts, fs, made)
    enabled = fs.read(leaf / "cgroup.subtree_control").split()
    if not enabled:
        return
    children = sorted(p.name for p in leaf.iterdir() if p.is_dir())
    if children:
        raise CgroupError(
            f"{leaf} enables {' '.join(enabled)} for its child cgroups ({', '.join(children)}), "
            "so it cannot hold processes (cgroup v2 'no internal processes' rule)")
    try:
        fs.write(leaf / "cgroup.subtree_control", " ".join(f"-{c}" for c in enabled))
    except OSError as exc:
        raise CgroupError(f"cannot disable the controllers {' '.join(enabled)} in {leaf}: "
                          f"{exc.strerror}") from exc


def _descend(layout: V2Layout, parts: tuple[str, ...], fs: CgroupFs, made: list[Path]) -> Path:
    """Make ``parts`` below the root level by level, each level's parent delegating the
    controllers to it; returns the last directory."""
    current = layout.root
    for part in parts:
        # A child only gets a controller's files if its parent lists the controller in
        # cgroup.subtree_control, so enable before descending.
        _enable(fs, current)
        mkdirs(fs, current, (part,), made)
        current = current / part
    return current


def _enable(fs: CgroupFs, cgroup: Path) -> None:
    available = set(fs.read(cgroup / "cgroup.controllers").split())
    enabled = set(fs.read(cgroup / "cgroup.subtree_control").split())
    for controller in WANTED:
        if controller in available and controller not in enabled:
            try:
                fs.write(cgroup / "cgroup.subtree_control", f"+{controller}")
            except OSError as exc:
                raise CgroupError(
                    f"cannot enable the {controller} controller in {cgroup}: {exc.strerror} "
                    "(a cgroup holding processes cannot delegate controllers)"
                ) from exc


def _set_memory(fs: CgroupFs, pod: Path, limit: int | None) -> None:
    if not (pod / "memory.max").exists():
        if limit is not None:
            raise CgroupError(f"memory controller not available in {pod}: cannot set a limit")
        return
    if limit is not None:
        fs.write(pod / "memory.max", str(limit))
    # swap.max is hierarchical: 0 here keeps every container of the pod out of swap. The file
    # is missing on kernels built without swap accounting, where there is nothing to disable.
    if (pod / "memory.swap.max").exists():
        fs.write(pod / "memory.swap.max", "0")


def _set_cpu(fs: CgroupFs, pod: Path, res: Resources) -> None:
    if res.cpu_shares is not None:
        fs.write(pod / "cpu.weight", str(shares_to_weight(res.cpu_shares)))
    if res.cpu_quota is not None or res.cpu_period is not None:
        # cpu.max is "<quota|max> [period]"; leaving the period out keeps the current one.
        quota = "max" if res.cpu_quota in (None, -1) else str(res.cpu_quota)
        value = quota if res.cpu_period is None else f"{quota} {res.cpu_period}"
        fs.write(pod / "cpu.max", value)
