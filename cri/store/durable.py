"""Crash-safe files: write to a temp file, fsync, rename, fsync the directory.

A reader (or a daemon restarting after kill -9) sees either the old content or the new one,
never a torn write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def make_private_dir(path: Path) -> None:
    """A 0700 directory (state dirs are never readable by others)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
