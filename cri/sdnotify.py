"""systemd's service notification protocol (sd_notify(3)) for a ``Type=notify`` unit: newline
separated ``KEY=VALUE`` assignments in one datagram to the AF_UNIX socket that systemd names in
$NOTIFY_SOCKET. A name starting with '/' is a path, one starting with '@' an abstract socket
(the '@' stands for the leading NUL byte). Without $NOTIFY_SOCKET nothing is sent, so the daemon
runs the same outside systemd.

The variable is taken out of the daemon's environment when read (what sd_notify's
``unset_environment`` does): runc, given a NOTIFY_SOCKET, would proxy it into the container and
make ``runc start`` wait for the container's own READY=1. runc and conmon already get a fixed
environment; this keeps every other child (mount, iptables, CNI plugins) from seeing it too.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def take_socket() -> str:
    """$NOTIFY_SOCKET ('' when unset), removed from the environment children inherit."""
    return os.environ.pop(ENV, "")


def _address(name: str) -> str | None:
    if name.startswith("/"):
        return name
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]  # Linux's abstract namespace
    return None  # e.g. systemd's vsock: addresses, for services inside VMs


def notify(state: str, notify_socket: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to ``notify_socket``, the value of $NOTIFY_SOCKET.

    False, sending nothing, when there is no socket; a socket that cannot be reached is logged
    and also False: a lost notification must never stop the daemon. The send does not block
    (systemd reads these at once; a full queue drops this one).
    """
    if not notify_socket:
        return False
    address = _address(notify_socket)
    if address is None:
        log.warning("%s=%r is not a unix socket address; not notifying systemd", ENV,
                    notify_socket)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd (%s) through %s: %s", state.replace("\n", " "),
                    notify_socket, exc)
        return False
    return True
