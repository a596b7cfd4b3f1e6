"""Cleanup shared by the tests that run real containers under a per-test cgroup parent."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def remove_cgroup_tree(name: str, root: Path = CGROUP_ROOT) -> None:
    """Remove cgroup ``name`` and everything below it, deepest first, in every hierarchy."""
    if not root.is_dir():
        return
    for hierarchy in root.iterdir():
        top = hierarchy / name.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
