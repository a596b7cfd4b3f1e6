"""Which cgroup version a host runs and where its hierarchies are mounted."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from sandbox.cgroups._fs import DEFAULT_ROOT
from sandbox.errors import CgroupError


@dataclass(frozen=True)
class Hierarchy:
    """One v1 hierarchy: a mount and the controllers (or name) it carries.

    ``controllers`` is empty for the cgroup2 mount of a hybrid host: it only tracks processes,
    but runc puts containers there too, so pod directories must be made and removed there.
    """

    path: Path
    controllers: frozenset[str]


@dataclass(frozen=True)
class V1Layout:
    root: Path
    hierarchies: tuple[Hierarchy, ...]

    def dir_of(self, controller: str) -> Path | None:
        """The mount carrying ``controller``, or None where the host lacks it."""
        for h in self.hierarchies:
            if controller in h.controllers:
                return h.path
        return None

    @property
    def unified(self) -> Path | None:
        """The hybrid host's cgroup2 mount, if there is one."""
        for h in self.hierarchies:
            if not h.controllers:
                return h.path
        return None


@dataclass(frozen=True)
class V2Layout:
    root: Path
    controllers: frozenset[str]  # what the root offers (cgroup.controllers)


Layout: TypeAlias = V1Layout | V2Layout


def detect(root: Path = DEFAULT_ROOT) -> Layout:
    """Describe the cgroup tree at ``root``.

    ``root/cgroup.controllers`` exists only when ``root`` itself is a cgroup2 mount: a v2 host.
    Otherwise every directory under ``root`` with a ``cgroup.procs`` is a hierarchy; its name
    lists its controllers ("cpu,cpuacct", or "cpu" and "cpuacct" mounted apart, or a named one
    such as "systemd"); the "cpu" -> "cpu,cpuacct" convenience symlinks are skipped. A directory
    holding ``cgroup.controllers`` is the hybrid host's cgroup2 mount.
    """
    controllers_file = root / "cgroup.controllers"
    if controllers_file.is_file():
        return V2Layout(root=root, controllers=frozenset(controllers_file.read_text().split()))
    found: list[Hierarchy] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError as exc:
        raise CgroupError(f"no cgroup filesystem at {root}") from exc
    for entry in entries:
        # Symlinks ("cpu" -> "cpu,cpuacct") point at a sibling that is listed in its own right.
        if not entry.is_dir(follow_symlinks=False) or not _exists(f"{entry.path}/cgroup.procs"):
            continue
        if _exists(f"{entry.path}/cgroup.controllers"):
            found.append(Hierarchy(Path(entry.path), frozenset()))
        else:
            found.append(Hierarchy(Path(entry.path), frozenset(entry.name.split(","))))
    if not any(h.controllers for h in found):
        raise CgroupError(f"no cgroup v1 hierarchy or cgroup2 mount found at {root}")
    return V1Layout(root=root, hierarchies=tuple(found))


@functools.lru_cache(maxsize=8)
def cached_detect(root: Path) -> Layout:
    """detect() once per root: mounts under /sys/fs/cgroup do not change while the daemon runs,
    and the scan costs a few hundred microseconds on every pod cgroup call otherwise."""
    return detect(root)


def _exists(path: str) -> bool:
    return os.access(path, os.F_OK)
