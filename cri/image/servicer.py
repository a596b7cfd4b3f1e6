"""ImageService servicer. The image issue fills these in; until then each RPC answers
UNIMPLEMENTED naming itself (see cri.runtime.unimplemented)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cri.api import api_pb2_grpc
from cri.runtime.unimplemented import fill_unimplemented

if TYPE_CHECKING:
    from cri.runtime.daemon import Runtime


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime


fill_unimplemented(ImageServicer, "ImageService")
