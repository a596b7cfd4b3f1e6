"""What tells a changed file apart without reading it again (CDI specs, OCI hook files): a
rewrite in place changes its size or mtime/ctime, a replace-by-rename (how drivers and
packages install such files) changes its inode."""

from __future__ import annotations

import os

Stamp = tuple[int, int, int, int]


def stamp(st: os.stat_result) -> Stamp:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
