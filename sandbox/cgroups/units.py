"""systemd unit names for cgroups, and where they live in the tree (pure functions).

With the systemd driver a pod's cgroup is a slice and a container's a scope. The kubelet hands
pods slice names (``kubepods-besteffort-pod<uid>.slice``); runc takes a container's as the
triple ``<slice>:<prefix>:<name>`` and makes the scope ``<prefix>-<name>.scope`` in that slice.
A dash in a slice name is nesting: ``a-b.slice`` is the child of ``a.slice``
(systemd.slice(5)), so the cgroup of ``a-b-c.slice`` is ``a.slice/a-b.slice/a-b-c.slice``.
"""

from __future__ import annotations

import re

from sandbox.errors import CgroupError

# A slice's name without ".slice": dash-separated parts of plain characters. No '@' (template
# instances), no ':' (runc's triple separator), no '/', '\\' or '.'-only parts, so a name never
# walks anywhere but down the slice tree.
_SLICE_PART = r"[A-Za-z0-9_][A-Za-z0-9_.]*"
_SLICE_RE = re.compile(rf"{_SLICE_PART}(?:-{_SLICE_PART})*\.slice")
_SCOPE_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MAX_UNIT_NAME = 255  # systemd's UNIT_NAME_MAX (with the suffix)


def is_unit_form(path: str) -> bool:
    """True for a systemd name (``x.slice`` or ``x.slice:prefix:name``), False for a cgroupfs
    path (which is absolute). Nothing else is either; the parsers say why."""
    return not path.startswith("/") and (path.endswith(".slice") or path.count(":") == 2)


def check_slice(name: str) -> None:
    """Raise CgroupError unless ``name`` is a slice pycri may manage (not the root slice)."""
    if len(name) > _MAX_UNIT_NAME or not _SLICE_RE.fullmatch(name):
        raise CgroupError(f"{name!r} is not a valid systemd slice name (like kubepods-pod1.slice)")
    if name.endswith("..slice"):
        raise CgroupError(f"{name!r} is not a valid systemd slice name")


def slice_components(name: str) -> tuple[str, ...]:
    """The cgroup path components of slice ``name``: ``a-b.slice`` -> (a.slice, a-b.slice)."""
    check_slice(name)
    stem = name[: -len(".slice")]
    out = []
    for i, ch in enumerate(stem):
        if ch == "-":
            out.append(stem[:i] + ".slice")
    out.append(name)
    return tuple(out)


def scope_name(prefix: str, name: str) -> str:
    """runc's scope unit for ``<slice>:<prefix>:<name>``."""
    unit = f"{prefix}-{name}.scope"
    if len(unit) > _MAX_UNIT_NAME or not _SCOPE_PART_RE.fullmatch(prefix) \
            or not _SCOPE_PART_RE.fullmatch(name):
        raise CgroupError(f"invalid systemd scope name {unit!r}")
    return unit


def split_triple(path: str) -> tuple[str, str, str]:
    """``slice:prefix:name`` -> its three parts, each checked."""
    parts = path.split(":")
    if len(parts) != 3:
        raise CgroupError(f"{path!r} is not a systemd cgroup (slice:prefix:name)")
    slice_, prefix, name = parts
    check_slice(slice_)
    scope_name(prefix, name)
    return slice_, prefix, name


def unit_components(path: str) -> tuple[str, ...]:
    """Cgroup path components, under the v2 root, of a slice or a ``slice:prefix:name``."""
    if path.endswith(".slice") and ":" not in path:
        return slice_components(path)
    slice_, prefix, name = split_triple(path)
    return (*slice_components(slice_), scope_name(prefix, name))


def pod_slice(parent: str, uid: str) -> str:
    """The slice of a pod whose parent slice is ``parent``: ``pycri.slice`` and uid ``1-2`` ->
    ``pycri-pod1_2.slice``. Dashes in the uid become underscores, as the kubelet does: a dash
    would be read as one more level of nesting."""
    check_slice(parent)
    name = f"{parent[: -len('.slice')]}-pod{uid.replace('-', '_')}.slice"
    check_slice(name)
    return name
