"""RemoveImage: by id, prefix, tag or digest - the image and all its tags; idempotent.

The image and its freed layers leave the store at once; deleting the layers' trees happens in
a worker thread, so the daemon goes on answering while a large image's files go."""

from __future__ import annotations

import asyncio

from cri.errors import InvalidArgument
from cri.image.images import Images
from cri.image.store import purge


async def remove_image(images: Images, spec: str) -> None:
    if not spec:
        raise InvalidArgument("RemoveImage needs an image")
    await asyncio.to_thread(purge, images.remove(spec))
