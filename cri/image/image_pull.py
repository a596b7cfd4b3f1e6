"""PullImage: resolve through registries.conf, pull, answer with the image id."""

from __future__ import annotations

from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.image.auth import Credentials
from cri.image.images import Images


def credentials(auth: api_pb2.AuthConfig) -> Credentials:
    return Credentials(username=auth.username, password=auth.password, auth=auth.auth,
                       identity_token=auth.identity_token, registry_token=auth.registry_token)


async def pull_image(images: Images, request: api_pb2.PullImageRequest,
                     deadline: float | None) -> str:
    image = request.image.image
    if not image:
        raise InvalidArgument("PullImage needs an image reference")
    rec = await images.pull(image, credentials(request.auth), deadline)
    return rec.id
