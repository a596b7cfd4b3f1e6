"""Pod cgroups with the cgroupfs driver, on cgroup v1 (including hybrid hosts) and v2.

Every function takes the cgroup filesystem root (default /sys/fs/cgroup) so both versions are
tested against tmp_path trees; ``fs`` is the seam a test fake replaces (see ``_fs.CgroupFs``).
Paths are cgroupfs paths relative to each hierarchy root, e.g. ``/kubepods/burstable/pod<uid>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from sandbox.cgroups import v1, v2
from sandbox.cgroups._fs import (
    DEFAULT_ROOT,
    KERNEL,
    CgroupFs,
    KernelFs,
    check_name,
    parse_path,
    read_pids,
    remove_tree,
    rmdir_retrying,
    walk_dirs,
)
from sandbox.cgroups.layout import Hierarchy, Layout, V1Layout, V2Layout, cached_detect, detect
from sandbox.cgroups.resources import Resources, shares_to_weight
from sandbox.errors import CgroupError

__all__ = [
    "DEFAULT_ROOT",
    "KERNEL",
    "CgroupFs",
    "Hierarchy",
    "KernelFs",
    "Layout",
    "Resources",
    "V1Layout",
    "V2Layout",
    "add_pid",
    "child_controllers",
    "container_cgroup_path",
    "create_leaf_cgroup",
    "create_pod_cgroup",
    "detect",
    "list_pids",
    "pod_cgroup_dirs",
    "pod_cgroup_exists",
    "remove_pod_cgroup",
    "shares_to_weight",
]


def pod_cgroup_dirs(path: str, *, root: Path = DEFAULT_ROOT) -> list[Path]:
    """The directories that make up cgroup ``path``: one per hierarchy on v1, one on v2."""
    parts = parse_path(path)
    layout = cached_detect(root)
    if isinstance(layout, V2Layout):
        return [layout.root.joinpath(*parts)]
    return v1.pod_dirs(layout, parts)


def pod_cgroup_exists(path: str, *, root: Path = DEFAULT_ROOT) -> bool:
    """True when ``path`` exists in every hierarchy. Half-made leftovers count as absent, so a
    retry completes them and then owns (and later removes) them."""
    return all(d.is_dir() for d in pod_cgroup_dirs(path, root=root))


def create_pod_cgroup(
    path: str,
    memory_limit: int | None = None,
    *,
    cpu_shares: int | None = None,
    cpu_quota: int | None = None,
    cpu_period: int | None = None,
    root: Path = DEFAULT_ROOT,
    fs: CgroupFs = KERNEL,
) -> bool:
    """Create the pod cgroup ``path`` (and missing ancestors) with swap disabled and the given
    limits; return True if the pod directory was made by this call in any hierarchy.

    Swap is always disabled: v2 memory.swap.max=0; v1 memory.swappiness=0, and memsw equal to
    the memory limit when one is given. Limits are (re)applied to an existing cgroup too. On
    failure, every directory this call made is removed again before CgroupError is raised.
    """
    res = Resources(memory_limit, cpu_shares, cpu_quota, cpu_period)

    def make(layout: Layout, parts: tuple[str, ...], made: list[Path]) -> None:
        if isinstance(layout, V2Layout):
            v2.create(layout, parts, res, fs, made)
        else:
            v1.create(layout, parts, res, fs, made)

    return _create(path, make, root, fs, "pod cgroup")


def create_leaf_cgroup(path: str, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> bool:
    """Create cgroup ``path`` (and missing ancestors) for processes of its own, put there with
    add_pid: the conmon cgroup. Returns True if this call made it.

    On v2 a cgroup either holds processes or enables controllers for child cgroups, never both
    (the kernel answers EBUSY): this one gets the controllers from its ancestors, so its
    processes are still accounted, and enables none itself (create_pod_cgroup's pod does).
    Controllers enabled there before (by an older pycri) are disabled while it has no children.
    On v1 it is made as a pod cgroup without limits (swap off), v1 having no such rule.
    """
    def make(layout: Layout, parts: tuple[str, ...], made: list[Path]) -> None:
        if isinstance(layout, V2Layout):
            v2.create_leaf(layout, parts, fs, made)
        else:
            v1.create(layout, parts, Resources(), fs, made)

    return _create(path, make, root, fs, "cgroup")


def _create(path: str, make: Callable[[Layout, tuple[str, ...], list[Path]], None], root: Path,
            fs: CgroupFs, what: str) -> bool:
    """``make`` the cgroup; whether it made the cgroup's own directory in any hierarchy. On
    failure, every directory it made is removed again before CgroupError is raised."""
    parts = parse_path(path)
    layout = cached_detect(root)
    made: list[Path] = []
    try:
        make(layout, parts, made)
    except BaseException as exc:
        for d in reversed(made):
            with contextlib.suppress(CgroupError):
                rmdir_retrying(fs, d)
        if isinstance(exc, CgroupError):
            raise
        if isinstance(exc, OSError):
            raise CgroupError(f"cannot set up {what} {path}: {exc}") from exc
        raise
    leaves = ([layout.root.joinpath(*parts)] if isinstance(layout, V2Layout)
              else v1.pod_dirs(layout, parts))
    return any(leaf in made for leaf in leaves)


def remove_pod_cgroup(path: str, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> None:
    """Remove the pod cgroup and every cgroup below it, deepest first, in every hierarchy.

    Idempotent. Refuses with CgroupError naming the processes when any are still inside: the
    caller stops them first. Ancestors (``/kubepods/burstable``) are left alone.
    """
    dirs = pod_cgroup_dirs(path, root=root)
    pids = _pids_in(fs, dirs)
    if pids:
        raise CgroupError(f"cgroup {path} still has processes: {_describe(pids)}")
    for d in dirs:
        remove_tree(fs, d)


def child_controllers(path: str, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL
                      ) -> frozenset[str]:
    """The controllers a cgroup made below ``path`` gets: on v2 what ``path`` enables in its
    cgroup.subtree_control now (see features.for_pod for what that tells), on v1 the
    controllers of the mounted hierarchies. Empty when ``path`` does not exist."""
    layout = cached_detect(root)
    if isinstance(layout, V1Layout):
        return frozenset(c for h in layout.hierarchies for c in h.controllers)
    try:
        return frozenset(fs.read(layout.root.joinpath(*parse_path(path),
                                                      "cgroup.subtree_control")).split())
    except FileNotFoundError:
        return frozenset()


def list_pids(
    path: str, *, root: Path = DEFAULT_ROOT, recursive: bool = True, fs: CgroupFs = KERNEL
) -> list[int]:
    """Sorted pids in cgroup ``path`` (and below it when ``recursive``), across hierarchies."""
    dirs = pod_cgroup_dirs(path, root=root)
    if recursive:
        return _pids_in(fs, dirs)
    return sorted({pid for d in dirs for pid in read_pids(fs, d)})


def add_pid(path: str, pid: int, *, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> None:
    """Move process ``pid`` into cgroup ``path`` in every hierarchy (which must exist)."""
    for d in pod_cgroup_dirs(path, root=root):
        try:
            fs.write(d / "cgroup.procs", str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot move pid {pid} into {d}: {exc.strerror}") from exc


def container_cgroup_path(pod_path: str, container_id: str, prefix: str = "pycri") -> str:
    """The OCI ``linux.cgroupsPath`` for a container (or, with another prefix, a conmon) of the
    pod: ``<pod path>/<prefix>-<id>``. runc creates it and removes it again on delete."""
    parts = parse_path(pod_path)
    if not container_id:
        raise CgroupError("empty container id")
    name = f"{prefix}-{container_id}"
    check_name(name)  # the id becomes one path component, never a path
    return "/" + "/".join((*parts, name))


def _pids_in(fs: CgroupFs, dirs: list[Path]) -> list[int]:
    return sorted({pid for top in dirs for d in walk_dirs(top) for pid in read_pids(fs, d)})


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids[:20]:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        out.append(f"{pid} ({comm})")
    if len(pids) > 20:
        out.append(f"and {len(pids) - 20} more")
    return ", ".join(out)
