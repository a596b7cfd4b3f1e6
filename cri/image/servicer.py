"""ImageService servicer: thin - unpack the request, call the RPC's module, pack the reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from cri.api import api_pb2, api_pb2_grpc
from cri.image import image_list, image_pull, image_remove, image_status
from cri.image.image_fs_info import image_fs_info
from cri.runtime.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri.runtime.daemon import Runtime

Ctx = grpc.aio.ServicerContext[Any, Any]
STREAM_BATCH = 100


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ListImages(self, request: api_pb2.ListImagesRequest, context: Ctx
                         ) -> api_pb2.ListImagesResponse:
        return api_pb2.ListImagesResponse(
            images=image_list.list_images(self.runtime.images, request.filter.image.image))

    async def StreamImages(self, request: api_pb2.StreamImagesRequest, context: Ctx
                           ) -> AsyncIterator[api_pb2.StreamImagesResponse]:
        items = image_list.list_images(self.runtime.images, request.filter.image.image)
        for i in range(0, len(items), STREAM_BATCH):
            yield api_pb2.StreamImagesResponse(images=items[i:i + STREAM_BATCH])

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest, context: Ctx
                          ) -> api_pb2.ImageStatusResponse:
        return image_status.image_status(self.runtime.images, request.image.image,
                                         request.verbose)

    async def PullImage(self, request: api_pb2.PullImageRequest, context: Ctx
                        ) -> api_pb2.PullImageResponse:
        ref = await image_pull.pull_image(self.runtime.images, request, context.time_remaining())
        return api_pb2.PullImageResponse(image_ref=ref)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest, context: Ctx
                          ) -> api_pb2.RemoveImageResponse:
        await image_remove.remove_image(self.runtime.images, request.image.image)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest, context: Ctx
                          ) -> api_pb2.ImageFsInfoResponse:
        rt = self.runtime
        return await asyncio.to_thread(image_fs_info, rt.images.store, rt.container_root,
                                       rt.container_fs_usage)


fill_unimplemented(ImageServicer, "ImageService")
