"""ImageFsInfo: bytes and inodes used by the image store and by container writable layers.

The kubelet calls it for image garbage collection and eviction, and CRI clients call it when
they connect to check the service is there. Until the image store lands both trees are (nearly)
empty; the walk counts allocated blocks, so it reports what the disk really holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cri.api import api_pb2


def usage(root: Path) -> tuple[int, int]:
    """(bytes allocated, inodes) under ``root``, not following symlinks or crossing mounts."""
    used = inodes = 0
    dev = root.stat().st_dev
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != dev:
                    continue
                used += st.st_blocks * 512
                inodes += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    st = root.stat()
    return used + st.st_blocks * 512, inodes + 1


def _fs_usage(root: Path) -> api_pb2.FilesystemUsage:
    used, inodes = usage(root)
    return api_pb2.FilesystemUsage(
        timestamp=time.time_ns(),
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(root)),
        used_bytes=api_pb2.UInt64Value(value=used),
        inodes_used=api_pb2.UInt64Value(value=inodes),
    )


def image_fs_info(image_root: Path, container_root: Path) -> api_pb2.ImageFsInfoResponse:
    return api_pb2.ImageFsInfoResponse(
        image_filesystems=[_fs_usage(image_root)],
        container_filesystems=[_fs_usage(container_root)],
    )
