"""Read-only image root filesystems: the image's layers stacked with overlayfs.

Lower dirs are given through the store's short links. mount(2) is called directly (no mount
process: a CreateContainer is latency-sensitive) while the option string with absolute link
paths fits in the page the kernel accepts; past that (images with 100+ layers) mount(8) runs
with the store root as its working directory and the links relative to it. A one-layer image
is a read-only bind mount (overlayfs needs two lowers when it has no upper).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
from pathlib import Path

from cri.errors import Internal
from cri.image.store import ImageStore
from sandbox.libc import MNT_DETACH, libc


async def _mount(args: list[str], cwd: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "mount", *args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise Internal(f"mount {' '.join(args)}: {err.decode(errors='replace').strip()}")


async def mount_rootfs(store: ImageStore, chain: list[str], target: Path,
                       upper: Path | None = None) -> None:
    """The image's layers at ``target``: with ``upper`` (and a ``work`` dir beside it, on the
    same filesystem) a writable overlay - runc needs to create mount points even under a
    root it makes read-only - else a read-only view."""
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    if upper is not None:
        work = upper.with_name(upper.name + "-work")
        for d in (upper, work):
            await asyncio.to_thread(d.mkdir, mode=0o755, parents=True, exist_ok=True)
        tail = f",upperdir={upper},workdir={work}"
        absolute = f"lowerdir={_absolute(store, chain)}{tail}"
        if len(absolute) < _OPTIONS_MAX:
            await asyncio.to_thread(_overlay_syscall, target, absolute, 0)
            return
        opts = f"lowerdir={store.lowerdir(chain)}{tail}"
        await _mount(["-t", "overlay", "overlay", "-o", opts, str(target)], store.root)
        return
    if len(chain) == 1:
        layer = store.layer_dir(chain[0]) / "diff"
        await _mount(["--bind", str(layer), str(target)], store.root)
        await _mount(["-o", "remount,bind,ro", str(target)], store.root)
        return
    absolute = f"lowerdir={_absolute(store, chain)}"
    if len(absolute) < _OPTIONS_MAX:
        await asyncio.to_thread(_overlay_syscall, target, absolute, MS_RDONLY)
        return
    lower = store.lowerdir(chain)
    await _mount(["-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(target)],
                 store.root)


_OPTIONS_MAX = 4000  # the kernel copies mount data into one page (4096, with the NUL)
MS_RDONLY = 0x1


def _absolute(store: ImageStore, chain: list[str]) -> str:
    return ":".join(f"{store.root}/{p}" for p in store.lowerdir(chain).split(":"))


def _overlay_syscall(target: Path, options: str, flags: int) -> None:
    if libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, options.encode()) != 0:
        err = ctypes.get_errno()
        raise Internal(f"mount overlay on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Idempotent (lazy, so a busy mount never blocks removal). os.path.ismount cannot tell a
    bind mount from the same filesystem, so the kernel is asked: EINVAL means not mounted."""
    if libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise Internal(f"unmount {target}: {os.strerror(err)}")
