"""Crash-safe files: write to a temp file, fsync, rename, fsync the directory.

A reader (or a daemon restarting after kill -9) sees either the old content or the new one,
never a torn write. The rename alone gives that for a process crash; the fsyncs add the
machine crash. Mutable status files skip them (``durable=False``): after a machine crash every
container and infra process is gone anyway, and start-up recovery rebuilds their state from
conmon's exit files and runc, so only what records that something exists (and must be cleaned
up) needs to reach the disk before the call returns. Each fsync costs about a millisecond on
these disks, on the path of every container operation.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any, *, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(),
                 durable=durable)


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


# What reading a state file can raise when it is missing, torn or of another shape.
READ_ERRORS = (OSError, ValueError, TypeError, KeyError, DecodeError)


def sync_paths(paths: list[Path]) -> None:
    """fsync files and directories written earlier without it (in order, so a file before the
    directory that names it). A path removed meanwhile (a creation rolled back) is skipped."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_private_dir(path: Path) -> None:
    """A 0700 directory (state dirs are never readable by others)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


_libc: ctypes.CDLL | None = None


def syncfs(path: Path) -> None:
    """syncfs(2): write out everything cached for the filesystem ``path`` is on (the dirty
    data of every file on it, not only ours; os has no binding for it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
