"""The pod's /dev/shm: a size-capped tmpfs shared by the pod's containers through the
infra container's IPC namespace, as CRI-O mounts it per sandbox.

mount(2) and umount2(2) are called directly through libc: no ``mount`` process per pod, and
the errno reaches the caller as an OSError.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from pathlib import Path

from sandbox.libc import MNT_DETACH, libc

DEFAULT_SHM_SIZE = 64 * 1024 * 1024  # Docker's and CRI-O's default
MAX_SHM_SIZE = (1 << 62) - 1  # far beyond any RAM, far below what overflows the kernel's parser

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8

# A bound on unmount attempts: enough to peel a few stacked mounts, never a busy loop.
_MAX_STACKED = 16



def _check(ret: int, what: str, path: Path) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", str(path))


def mount_shm(path: Path, size_bytes: int = DEFAULT_SHM_SIZE) -> None:
    """Mount a fresh tmpfs of ``size_bytes`` at ``path`` (created if missing).

    nosuid/nodev/noexec: shared memory never needs set-uid binaries, device nodes or code
    execution, and a world-writable (1777) directory shared by every container of the pod must
    not become a way to run dropped binaries. Refuses (EBUSY) to stack on an existing mount.
    """
    # The upper bound matters: tmpfs wraps an oversized size=... to 0, which means unlimited.
    if (
        isinstance(size_bytes, bool)
        or not isinstance(size_bytes, int)
        or not 0 < size_bytes <= MAX_SHM_SIZE
    ):
        raise ValueError(f"shm size must be 1 to {MAX_SHM_SIZE} bytes, not {size_bytes!r}")
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.is_mount():
        raise OSError(errno.EBUSY, "already a mount point", str(path))
    data = f"mode=1777,size={size_bytes}".encode()
    ret = libc.mount(b"shm", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, data)
    _check(ret, "mount tmpfs", path)


def unmount_shm(path: Path) -> None:
    """Lazily unmount ``path`` and remove the directory. Missing or unmounted paths are fine.

    MNT_DETACH because a container process may still hold the mount open while the pod is torn
    down; the kernel frees it once the last user is gone.
    """
    # Path("") is "." and "/" is the root: a lazy unmount of either would take the node down.
    if not path.is_absolute() or path == Path(path.anchor):
        raise ValueError(f"refusing to unmount {str(path)!r}: not an absolute shm path")
    target = os.fsencode(path)
    for _ in range(_MAX_STACKED):
        if libc.umount2(target, MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                break
            raise OSError(err, f"umount: {os.strerror(err)}", str(path))
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()
