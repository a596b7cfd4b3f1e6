"""Which mount holds a path, and how it propagates (/proc/self/mountinfo).

Host-to-container (rslave) and bidirectional (rshared) CRI mounts only do what they promise
when the host mount their source lives on is itself shared (or, for rslave, a slave): on a
private mount the container would silently see no propagation at all. So pycri asks first and
refuses with a clear error, as CRI-O does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    shared: bool  # "shared:N" in the optional fields
    slave: bool  # "master:N"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        optional = fields[6:fields.index("-", 6)]
        entries.append(MountEntry(
            mount_point=_unescape(fields[4]),
            shared=any(f.startswith("shared:") for f in optional),
            slave=any(f.startswith("master:") for f in optional),
        ))
    return entries


def mount_of(path: str, entries: list[MountEntry]) -> MountEntry | None:
    """The mount ``path`` (already resolved, absolute) is on: the last, longest match."""
    best: MountEntry | None = None
    for entry in entries:
        mp = entry.mount_point
        inside = path == mp or mp == "/" or path.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best.mount_point)):
            best = entry
    return best


def propagation_of(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> MountEntry | None:
    return mount_of(os.path.realpath(path), parse_mountinfo(mountinfo.read_text()))
