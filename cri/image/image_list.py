"""ListImages and StreamImages, filtered by an image spec; answered from memory."""

from __future__ import annotations

from cri.api import api_pb2
from cri.image.image_status import to_message
from cri.image.images import Images


def list_images(images: Images, filter_spec: str) -> list[api_pb2.Image]:
    if filter_spec:
        rec = images.resolve(filter_spec)
        return [to_message(images, rec)] if rec is not None else []
    return [to_message(images, r) for r in images.store.images.values()]
