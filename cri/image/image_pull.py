"""PullImage: resolve through registries.conf, pull, answer with the image id."""

from __future__ import annotations

from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.image.auth import AuthError, Credentials
from cri.image.images import Images


def credentials(auth: api_pb2.AuthConfig) -> Credentials:
    creds = Credentials(username=auth.username, password=auth.password, auth=auth.auth,
                        identity_token=auth.identity_token, registry_token=auth.registry_token)
    try:
        return creds.resolved()  # a malformed base64 "auth" is the caller's error
    except AuthError as exc:
        raise InvalidArgument(f"PullImage auth: {exc}") from exc


async def pull_image(images: Images, request: api_pb2.PullImageRequest,
                     deadline: float | None) -> str:
    image = request.image.image
    if not image:
        raise InvalidArgument("PullImage needs an image reference")
    rec = await images.pull(image, credentials(request.auth), deadline)
    return rec.id
