"""ImageStatus and the Image message every image RPC returns; answered from memory."""

from __future__ import annotations

import json

from cri.api import api_pb2
from cri.image.images import Images
from cri.image.manifest import ManifestError, uid_username
from cri.image.store import ImageRecord


def to_message(images: Images, rec: ImageRecord) -> api_pb2.Image:
    msg = api_pb2.Image(
        id=rec.id,
        repo_tags=rec.repo_tags,
        repo_digests=rec.repo_digests,
        size=rec.size,
        spec=api_pb2.ImageSpec(image=rec.id),
        pinned=images.is_pinned(rec),
    )
    try:
        uid, username = uid_username(rec.user)
    except ManifestError:
        uid, username = None, ""  # CreateContainer refuses such an image; status still shows it
    if uid is not None:
        msg.uid.value = uid
    msg.username = username
    return msg


def image_status(images: Images, spec: str, verbose: bool) -> api_pb2.ImageStatusResponse:
    """An unknown image is not an error: the response simply has no image (CRI contract)."""
    rec = images.resolve(spec)
    if rec is None:
        return api_pb2.ImageStatusResponse()
    resp = api_pb2.ImageStatusResponse(image=to_message(images, rec))
    if verbose:
        resp.info["info"] = json.dumps({
            "id": rec.id,
            "manifestDigest": rec.manifest_digest,
            "layers": rec.chain_ids,
            "size": rec.size,
            "pinned": images.is_pinned(rec),
            "config": json.loads(images.store.get_blob(rec.config_digest)),
        })
    return resp
