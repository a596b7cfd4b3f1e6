"""ImageFsInfo: bytes and inodes used by the image store and by container writable layers.

The kubelet calls it for image garbage collection and eviction, and CRI clients call it when
they connect to check the service is there. Layers are measured once, when they are
committed (allocated blocks, so it is what the disk really holds); only the small rest is
walked per call. The containers' dir holds their writable layers, which can be large and which
containers change under us: it is walked with sandbox.diskusage (no symlink followed, nothing
that vanishes counted) and the result reused in proportion to what the walk cost.
"""

from __future__ import annotations

import time
from pathlib import Path

from cri.api import api_pb2
from cri.image.store import ImageStore
from sandbox.diskusage import UsageCache


def _fs_usage(root: Path, used: int, inodes: int, at_ns: int | None = None
              ) -> api_pb2.FilesystemUsage:
    return api_pb2.FilesystemUsage(
        timestamp=time.time_ns() if at_ns is None else at_ns,
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(root)),
        used_bytes=api_pb2.UInt64Value(value=used),
        inodes_used=api_pb2.UInt64Value(value=inodes),
    )


def image_fs_info(store: ImageStore, container_root: Path, containers: UsageCache
                  ) -> api_pb2.ImageFsInfoResponse:
    measured = containers.usage("containers", container_root)
    return api_pb2.ImageFsInfoResponse(
        image_filesystems=[_fs_usage(store.root, *store.store_usage())],
        container_filesystems=[_fs_usage(container_root, measured.used_bytes, measured.inodes,
                                         measured.at_ns)],
    )
