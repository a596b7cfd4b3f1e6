"""Pod network namespaces, pinned by a bind mount under /var/run/netns like ``ip netns add``.

A namespace is created by a short-lived thread of our own that unshares its network namespace,
bind-mounts ``/proc/self/task/<tid>/ns/net`` onto the pin file, brings ``lo`` up and exits. Only
that thread ever changes namespace: the daemon calls these functions from asyncio's worker
threads, and a pool thread left inside a pod's namespace would quietly run later work there.

pyroute2's ``netns.create`` and ``IPRoute(netns=...)`` fork a helper process per call, which costs
far more than the whole operation here; the syscalls are made through libc instead (Python 3.11
has no os.unshare / os.setns).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from sandbox.errors import NetnsError
from sandbox.libc import MNT_DETACH, libc

NETNS_RUN_DIR = Path("/var/run/netns")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_MAX_STACKED = 16

# A file name, never a path: no '/', and not '.' or '..'.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")



def _oserror(what: str, path: Path | str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", str(path))


def create(name: str, run_dir: Path = NETNS_RUN_DIR) -> Path:
    """Create a network namespace pinned at ``run_dir/name`` with ``lo`` up; return the pin path.

    Raises NetnsError if the name is malformed or taken, or the namespace cannot be made.
    """
    if not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise NetnsError(f"invalid network namespace name {name!r}")
    try:
        run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        _make_shared(run_dir)
    except OSError as exc:
        raise NetnsError(f"cannot prepare {run_dir}: {exc}") from exc
    pin = run_dir / name
    try:
        os.close(os.open(pin, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    except FileExistsError as exc:
        raise NetnsError(f"network namespace {pin} already exists") from exc
    except OSError as exc:
        raise NetnsError(f"cannot create {pin}: {exc}") from exc
    try:
        _run_in_own_thread(lambda: _unshare_and_pin(pin))
    except BaseException as exc:
        remove(pin)
        if isinstance(exc, OSError):
            raise NetnsError(f"cannot create network namespace {pin}: {exc}") from exc
        raise
    return pin


def remove(path: Path) -> None:
    """Unpin and delete a namespace file. Idempotent: a missing or unmounted file is fine.

    MNT_DETACH: a process may still be entering the namespace through the pin; the namespace
    itself lives on until its last process and mount are gone.
    """
    # A lazy unmount of "/" or of the working directory (Path("") is ".") would be a disaster;
    # only absolute paths to a pin-like name are ever unmounted.
    if not path.is_absolute() or not _NAME_RE.fullmatch(path.name):
        raise NetnsError(f"refusing to remove {str(path)!r}: not a network namespace pin path")
    target = os.fsencode(path)
    for _ in range(_MAX_STACKED):
        if libc.umount2(target, MNT_DETACH) != 0:
            if ctypes.get_errno() in (errno.EINVAL, errno.ENOENT):  # not (or no more) mounted
                break
            raise NetnsError(f"cannot unmount {path}: {_oserror('umount2', path)}")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetnsError(f"cannot remove {path}: {exc}") from exc


def loopback_up(path: Path) -> None:
    """Bring ``lo`` up inside the namespace pinned at ``path``."""

    def enter_and_raise_lo() -> None:
        _enter(path)
        _lo_up()

    try:
        _run_in_own_thread(enter_and_raise_lo)
    except OSError as exc:
        raise NetnsError(f"cannot bring lo up in {path}: {exc}") from exc


def _enter(path: Path) -> None:
    """Move the calling thread into the network namespace pinned at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise _oserror("setns", path)
    finally:
        os.close(fd)


def open_socket(path: Path, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of the network namespace pinned at ``path`` (a netlink socket there lists the
    pod's links), made by a throwaway thread that entered it: the caller's threads never
    change namespace. Raises OSError."""
    result: list[socket.socket] = []

    def enter_and_open() -> None:
        _enter(path)
        result.append(socket.socket(family, kind, proto))

    _run_in_own_thread(enter_and_open)
    return result[0]


def _make_shared(run_dir: Path) -> None:
    """Make ``run_dir`` a shared mount, bind-mounting it onto itself first if it is not a mount.

    Same dance as iproute2: pins made under a shared mount propagate to mount namespaces
    created later (containers), and so does their unmount, so a removed namespace is really
    freed instead of lingering in some container's copy of the pin. Redone on every call, as
    iproute2 does, so an unmounted or re-mounted run dir is repaired (one syscall).
    """
    target = os.fsencode(run_dir)
    if libc.mount(b"none", target, None, MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
        raise _oserror("make shared", run_dir)
    if libc.mount(target, target, b"none", MS_BIND | MS_REC, None) != 0:
        raise _oserror("bind onto itself", run_dir)
    if libc.mount(b"none", target, None, MS_SHARED | MS_REC, None) != 0:
        raise _oserror("make shared", run_dir)


def _unshare_and_pin(pin: Path) -> None:
    # Runs in a throwaway thread: unshare(CLONE_NEWNET) moves only the calling thread.
    if libc.unshare(CLONE_NEWNET) != 0:
        raise _oserror("unshare(CLONE_NEWNET)", pin)
    source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    if libc.mount(source.encode(), os.fsencode(pin), b"none", MS_BIND, None) != 0:
        raise _oserror("bind mount netns", pin)
    _lo_up()


def _lo_up() -> None:
    # One ioctl on a socket of the current namespace: a netlink client costs ~1.5 ms here, this
    # a few microseconds. struct ifreq is 16 bytes of name then a union led by short ifr_flags.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, ifreq))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _run_in_own_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a new thread that exits afterwards, re-raising what it raised."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="pycri-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def connect_tcp(path: Path | None, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``port`` on the loopback of the network namespace pinned at ``path``
    (None: the daemon's own, for host-network pods), made by a throwaway thread that entered the
    namespace: the socket stays in that namespace, the daemon's threads never change theirs.
    Blocking: call it from a worker thread. Raises OSError (ECONNREFUSED when nothing listens).
    """
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {port}")
    result: list[socket.socket] = []

    def enter_and_connect() -> None:
        if path is not None:
            _enter(path)
        # IPv4 loopback first, then IPv6: a server may listen on either.
        last: OSError | None = None
        for host in ("127.0.0.1", "::1"):
            try:
                result.append(socket.create_connection((host, port), timeout=timeout))
                return
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    _run_in_own_thread(enter_and_connect)
    sock = result[0]
    sock.settimeout(None)
    return sock
