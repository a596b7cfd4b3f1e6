"""Read-only image root filesystems: the image's layers stacked with overlayfs.

Lower dirs are given through the store's short links, relative to the store root (mount(8)
runs with that as its working directory), so the mount option string stays well under a page
even for images with 100+ layers. A one-layer image is a read-only bind mount (overlayfs
needs two lowers when it has no upper).
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
        opts = f"lowerdir={store.lowerdir(chain)},upperdir={upper},workdir={work}"
        await _mount(["-t", "overlay", "overlay", "-o", opts, str(target)], store.root)
        return
    if len(chain) == 1:
        layer = store.layer_dir(chain[0]) / "diff"
        await _mount(["--bind", str(layer), str(target)], store.root)
        await _mount(["-o", "remount,bind,ro", str(target)], store.root)
        return
    lower = store.lowerdir(chain)
    await _mount(["-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(target)],
                 store.root)


def unmount(target: Path) -> None:
    """Idempotent (lazy, so a busy mount never blocks removal). os.path.ismount cannot tell a
    bind mount from the same filesystem, so the kernel is asked: EINVAL means not mounted."""
    if libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise Internal(f"unmount {target}: {os.strerror(err)}")
