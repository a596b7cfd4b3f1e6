"""Claiming a unix socket path a server will listen on (the CRI socket, NRI's socket)."""

from __future__ import annotations

import errno
import socket
import stat
from pathlib import Path


class SocketInUse(Exception):
    pass


def claim_socket(path: Path, hint: str = "stop it first") -> None:
    """Replace a stale socket; SocketInUse if another daemon answers on it (``hint`` says
    what to do then). Blocks up to a second probing it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUse(f"{path}: cannot tell whether it is in use: {exc}") from exc
        path.unlink(missing_ok=True)  # nobody listens: a leftover of a killed daemon
        return
    finally:
        probe.close()
    raise SocketInUse(f"{path} is in use by a running daemon; {hint}")
