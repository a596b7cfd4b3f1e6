"""RemoveImage: by id, prefix, tag or digest - the image and all its tags; idempotent."""

from __future__ import annotations

from cri.errors import InvalidArgument
from cri.image.images import Images


def remove_image(images: Images, spec: str) -> None:
    if not spec:
        raise InvalidArgument("RemoveImage needs an image")
    images.remove(spec)
