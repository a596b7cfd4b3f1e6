"""Whether a recorded container process is still the one running.

The records keep the pid the container's init had. While the daemon is down that pid can have
exited (conmon then wrote an exit file) or, later, been reused by an unrelated process: runc's
state names the init's start time (field 22 of /proc/PID/stat), which tells the two apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from cri.inspect.namespaces import PROC


def start_time(pid: int, proc: Path = PROC) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None when it is gone or a zombie."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not reaped yet
        return None
    return int(fields[19])


def running(ident: str, pid: int, *, exits_dir: Path, runtime_root: Path,
            proc: Path = PROC) -> bool:
    """True when container ``ident``'s init ``pid`` still runs."""
    if pid <= 0 or (exits_dir / ident).exists():
        return False
    started = start_time(pid, proc)
    if started is None:
        return False
    try:
        state = json.loads((runtime_root / ident / "state.json").read_bytes())
    except (OSError, ValueError):
        return True  # another runtime's state format: the pid and the exit file must do
    if not isinstance(state, dict) or state.get("init_process_pid") != pid:
        return True
    return bool(state.get("init_process_start") == started)
