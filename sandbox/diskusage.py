"""Disk space and inodes used by a directory tree (a container's writable layer, a pod's dir).

The tree belongs to a container, which can change it while we walk: entries vanish, directories
are swapped for symlinks. The walk therefore goes from directory fd to directory fd with
O_NOFOLLOW, so a swapped-in symlink is never followed out of the tree, and anything that
disappears half-way is simply not counted.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measured", "UsageCache", "usage"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# openat of a subdirectory that vanished (ENOENT), became a symlink (ELOOP) or something other
# than a directory (ENOTDIR) since it was listed.
_SKIP_ERRNOS = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})


def usage(path: Path) -> tuple[int, int]:
    """Return (bytes allocated, inodes) of the tree at ``path``, ``path`` itself included.

    Bytes are st_blocks * 512, so sparse files count what they occupy, not their size. Symlinks
    are counted, never followed; a file with several hard links in the tree is counted once;
    anything on another filesystem (a mount point: its st_dev differs) is left out with all
    below it. Bind mounts from the same filesystem cannot be told apart and are counted.
    FileNotFoundError when ``path`` does not exist.

    Holds one file descriptor per directory level while walking.
    """
    try:
        top = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.lstat(path)  # a file or a symlink: one inode
        return st.st_blocks * 512, 1
    walk = _Walk(os.fstat(top))
    stack: list[tuple[int, list[str]]] = []
    try:
        stack.append((top, walk.scan(top)))
        while stack:
            fd, pending = stack[-1]
            if not pending:
                os.close(stack.pop()[0])
                continue
            name = pending.pop()
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _SKIP_ERRNOS:
                    continue
                raise
            if os.fstat(child).st_dev != walk.dev:  # mounted over since it was listed
                os.close(child)
                continue
            stack.append((child, []))  # registered first, so the finally closes it
            stack[-1][1].extend(walk.scan(child))
    finally:
        for fd, _ in stack:
            os.close(fd)
    return walk.bytes, walk.inodes


class _Walk:
    def __init__(self, top: os.stat_result) -> None:
        self.dev = top.st_dev
        self.bytes = top.st_blocks * 512
        self.inodes = 1
        self.seen: set[int] = set()  # inode numbers of multiply-linked non-directories

    def scan(self, fd: int) -> list[str]:
        """Count the entries of directory ``fd``; return the names of its subdirectories."""
        subdirs: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_dev != self.dev:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(entry.name)
                elif st.st_nlink > 1:
                    if st.st_ino in self.seen:
                        continue
                    self.seen.add(st.st_ino)
                self.bytes += st.st_blocks * 512
                self.inodes += 1
        return subdirs


@dataclass(frozen=True, slots=True)
class Measured:
    used_bytes: int
    inodes: int
    at_ns: int  # wall-clock time of the measurement (what stats report as its timestamp)


class UsageCache:
    """usage() of per-container trees, each result kept in proportion to what it cost.

    A walk that took t seconds is reused for ``factor * t`` seconds, so walking costs at most
    about 1/factor of a CPU per tree however often stats are asked for: a usual writable layer
    (well under a millisecond) is measured afresh on every call, one with 100k files (~0.4 s
    here) about every 40 s. Safe to call from several worker threads.
    """

    def __init__(self, factor: float = 100.0, *,
                 walk: Callable[[Path], tuple[int, int]] = usage,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.factor = factor
        self._walk = walk
        self._clock = clock
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Measured]] = {}  # key -> (valid until, result)

    def usage(self, key: str, path: Path) -> Measured:
        """The tree at ``path`` measured now, or recently enough; FileNotFoundError if it is
        gone."""
        with self._lock:
            cached = self._entries.get(key)
        now = self._clock()
        if cached is not None and now < cached[0]:
            return cached[1]
        at_ns = self._wall_ns()
        used, inodes = self._walk(path)
        took = self._clock() - now
        measured = Measured(used, inodes, at_ns)
        with self._lock:
            self._entries[key] = (now + took * self.factor, measured)
        return measured

    def retain(self, keys: Container[str]) -> None:
        """Forget every entry whose key is not in ``keys``."""
        with self._lock:
            for key in [k for k in self._entries if k not in keys]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

