"""The cgroupfs seam: the few file operations the drivers make, plus path checks.

Real cgroupfs populates a new directory with control files and lets rmdir remove it while they
are listed; a tmp_path tree cannot. Everything that depends on that goes through ``CgroupFs`` so
unit tests can pass a fake that plays the kernel, while the drivers stay plain functions over a
root path (design rule 12 of docs/architecture.md).
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sandbox.cgroups import units
from sandbox.errors import CgroupError

DEFAULT_ROOT = Path("/sys/fs/cgroup")

# One path component. No '.', '..' or empty components (so no escape from the hierarchy root,
# CVE-2025-0750 style), and no ':' which runc reads as a systemd "slice:prefix:name" triple.
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,254}")


class CgroupFs(Protocol):
    def mkdir(self, path: Path) -> None:
        """Create one cgroup directory; FileExistsError if it exists."""

    def rmdir(self, path: Path) -> None:
        """Remove one (childless, empty of processes) cgroup directory."""

    def read(self, path: Path) -> str:
        """Return a control file's content."""

    def write(self, path: Path, value: str) -> None:
        """Write ``value`` to an existing control file in one write(2)."""


class KernelFs:
    """The real thing."""

    def mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o755)

    def rmdir(self, path: Path) -> None:
        path.rmdir()

    def read(self, path: Path) -> str:
        # Raw read(2)s, not a text file object: stats read a dozen files per container, and
        # the object costs more than the kernel's answer.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, 65536)]
            while chunks[-1]:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
        return b"".join(chunks).decode("ascii")

    def write(self, path: Path, value: str) -> None:
        # No O_CREAT: a misspelt control file must fail, not appear as a regular file.
        # O_NOFOLLOW: cgroupfs has no symlinks, so one here is someone else's doing.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            # The kernel parses each write(2) on its own; one call carries the whole value.
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)


KERNEL: CgroupFs = KernelFs()


def parse_path(path: str) -> tuple[str, ...]:
    """Split a cgroup path into its components under the hierarchy root.

    Two forms: a cgroupfs path such as ``/kubepods/burstable/pod<uid>`` (the cgroupfs driver),
    or a systemd name, ``a-b.slice`` or runc's ``a-b.slice:prefix:name`` (the systemd driver),
    which is where systemd puts that unit (see ``units``). Raises CgroupError for anything
    else: relative paths, '..', empty components, malformed unit names.
    """
    if units.is_unit_form(path):
        return units.unit_components(path)
    if not path.startswith("/"):
        raise CgroupError(
            f"cgroup path {path!r} must be absolute (a cgroupfs path) or a systemd slice"
        )
    parts = tuple(path[1:].split("/"))
    if parts == ("",):
        raise CgroupError("refusing to manage the root cgroup")
    for part in parts:
        if part in (".", "..") or not _COMPONENT_RE.fullmatch(part):
            raise CgroupError(f"cgroup path {path!r}: invalid component {part!r}")
    return parts


def check_name(name: str) -> None:
    """Raise CgroupError unless ``name`` is one plain path component."""
    if not _COMPONENT_RE.fullmatch(name):
        raise CgroupError(f"invalid cgroup name {name!r}")


def mkdirs(fs: CgroupFs, base: Path, parts: tuple[str, ...], made: list[Path]) -> None:
    """Create ``base/parts...`` level by level, appending each directory made to ``made``."""
    current = base
    for part in parts:
        current = current / part
        try:
            fs.mkdir(current)
        except FileExistsError:
            if not current.is_dir():
                raise CgroupError(f"{current} exists and is not a cgroup directory") from None
            continue
        made.append(current)


def walk_dirs(top: Path) -> Iterator[Path]:
    """Yield ``top`` and every directory under it, children before parents."""
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk_dirs(Path(entry.path))
    yield top


def read_pids(fs: CgroupFs, cgroup_dir: Path) -> list[int]:
    try:
        text = fs.read(cgroup_dir / "cgroup.procs")
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


# rmdir answers EBUSY for a short while after the last process left (it is still being torn
# down, or a zombie is not reaped yet); runc retries too.
_RMDIR_DELAYS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


def rmdir_retrying(fs: CgroupFs, path: Path) -> None:
    for delay in (*_RMDIR_DELAYS, None):
        try:
            fs.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or delay is None:
                raise CgroupError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
        time.sleep(delay)


def remove_tree(fs: CgroupFs, top: Path) -> None:
    """rmdir ``top`` and every cgroup below it, deepest first. A missing ``top`` is fine."""
    for path in walk_dirs(top):
        rmdir_retrying(fs, path)
