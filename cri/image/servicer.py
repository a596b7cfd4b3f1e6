"""ImageService servicer. ImageFsInfo works now (clients probe it on connect); the image issue
fills in the rest, which until then answer UNIMPLEMENTED naming themselves."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc

from cri.api import api_pb2, api_pb2_grpc
from cri.image.image_fs_info import image_fs_info
from cri.runtime.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri.runtime.daemon import Runtime


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext[Any, Any]
                          ) -> api_pb2.ImageFsInfoResponse:
        rt = self.runtime
        return await asyncio.to_thread(image_fs_info, rt.image_root, rt.container_root)


fill_unimplemented(ImageServicer, "ImageService")
