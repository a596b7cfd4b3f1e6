"""Offline import: seed the image store from an OCI image layout (a directory or a tar of one)
or a docker-archive tar (``docker save``), for nodes that cannot reach a registry.

Everything is verified as in a pull: manifests and configs capped and checked by digest before
they are parsed, layers streamed from the archive (never extracted: see archive.py) into the
safe unpacker with their digest checked on the way, and their diff_ids checked before commit.
The image record is written last; a running daemon sees it through its watch on the records
directory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from cri.image import manifest as mf
from cri.image.archive import Archive, ArchiveError, open_archive
from cri.image.reference import InvalidReference, parse
from cri.image.store import ImageRecord, ImageStore, chain_ids
from cri.image.unpack import CHUNK, LayerStats, UnsafeLayer, unpack_image_layer

REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ImportError_(ArchiveError):
    """The archive is not an image this importer understands; the message says why."""


@dataclass(frozen=True)
class _Layer:
    name: str  # the member of the archive
    label: str  # how errors name it: its digest, or its member name in a docker-archive
    media_type: str = ""
    desc: mf.Descriptor | None = None  # what the manifest says; a docker-archive says nothing


@dataclass(frozen=True)
class _Image:
    tags: list[str]
    config: bytes
    layers: list[_Layer]
    manifest_digest: str  # "" for a docker-archive, which has no manifest


class _VerifyingReader:
    """Feeds what the unpacker reads to the blob's digest check, as a pull's download does."""

    def __init__(self, raw: BinaryIO, verifier: mf.DigestVerifier) -> None:
        self.raw = raw
        self.verifier = verifier

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.verifier.update(data)
        return data

    def finish(self) -> None:
        """The rest of the blob (past the end of the tar stream) checked too."""
        while self.read(CHUNK):
            pass
        self.verifier.finish()


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{what} is not JSON: {exc}") from exc


def _blob_name(digest: str) -> str:
    algo, _, hexpart = mf.check_digest(digest).partition(":")
    return f"blobs/{algo}/{hexpart}"


def _small_blob(archive: Archive, digest: str) -> bytes:
    """A manifest, index or config: capped as in a pull and verified before it is parsed."""
    data = archive.read(_blob_name(digest), mf.MAX_MANIFEST_BYTES)
    mf.verify_digest(data, digest)
    return data


def _tag(name: str) -> str:
    try:
        return str(parse(name).normalize())
    except InvalidReference as exc:
        raise ImportError_(f"image name {name!r}: {exc}") from exc


def _images_oci(archive: Archive) -> list[_Image]:
    index = _json(archive.read("index.json", mf.MAX_MANIFEST_BYTES), "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
        raise ImportError_("index.json is not an OCI image index")
    out = []
    for desc in index.get("manifests", []):
        body = _small_blob(archive, desc["digest"])
        parsed = mf.parse_manifest(body, desc.get("mediaType", ""))
        if isinstance(parsed, mf.Index):
            chosen = mf.select_platform(parsed)
            body = _small_blob(archive, chosen.digest)
            parsed = mf.parse_manifest(body, chosen.media_type)
            if not isinstance(parsed, mf.Manifest):
                raise ImportError_("nested index")
        config = _small_blob(archive, parsed.config.digest)
        layers = []
        for ly in parsed.layers:
            name = _blob_name(ly.digest)
            if ly.foreign and not archive.has(name):
                # Layouts may leave non-distributable layers out; they are not fetched here.
                raise ImportError_(f"foreign layer {ly.digest} is not in the archive; pycri "
                                   "does not download foreign layers")
            layers.append(_Layer(name, ly.digest, ly.media_type, ly))
        # ref.name is a full reference in most tools' output, or only a tag (which needs a
        # name from --tag); a bare word is taken as the latter.
        ref = (desc.get("annotations") or {}).get(REF_ANNOTATION, "")
        tags = [_tag(ref)] if "/" in ref or ":" in ref else []
        out.append(_Image(tags, config, layers, mf.digest_of(body)))
    return out


def _images_docker(archive: Archive) -> list[_Image]:
    entries = _json(archive.read("manifest.json", mf.MAX_MANIFEST_BYTES), "manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImportError_("manifest.json is not a docker-archive manifest (a list of images)")
    out = []
    for entry in entries:
        # No digests here: the config is named by the digest computed from it, and each layer
        # is checked against the config's diff_ids once unpacked.
        config = archive.read(entry["Config"], mf.MAX_MANIFEST_BYTES)
        layers = []
        for name in entry["Layers"]:
            if not archive.has(name):
                raise ImportError_(f"layer {name!r} is not in the archive")
            layers.append(_Layer(name, name))
        tags = [_tag(t) for t in entry.get("RepoTags") or []]
        out.append(_Image(tags, config, layers, ""))
    return out


def _unpack(archive: Archive, layer: _Layer, dest: Path) -> LayerStats:
    """Unpacked straight from the archive's stream, the blob's digest checked on the way; the
    caller commits it only after this returns and its diff_id matches."""
    with archive.open(layer.name) as raw:
        if layer.desc is None:
            return unpack_image_layer(raw, dest, media_type=layer.media_type)
        reader = _VerifyingReader(raw, mf.DigestVerifier(layer.desc.digest, layer.desc.size))
        try:
            stats = unpack_image_layer(cast(BinaryIO, reader), dest,
                                       media_type=layer.media_type)
        except UnsafeLayer:
            reader.finish()  # a blob that is not the one the manifest names: that is the error
            raise
        reader.finish()
        return stats


def import_images(store: ImageStore, path: Path, extra_tag: str = "") -> list[ImageRecord]:
    """Import every image in ``path``; returns their records (the daemon picks them up)."""
    done = []
    with store.locked(), open_archive(path) as archive:
        if archive.has("index.json"):
            images = _images_oci(archive)
        elif archive.has("manifest.json"):
            images = _images_docker(archive)
        else:
            raise ImportError_(f"{path}: neither an OCI layout (index.json) nor a docker-archive "
                               "(manifest.json)")
        for image in images:
            cfg = mf.parse_image_config(image.config)
            if len(cfg.diff_ids) != len(image.layers):
                raise ImportError_(f"{len(image.layers)} layers but {len(cfg.diff_ids)} diff_ids")
            config_digest = mf.digest_of(image.config)
            chain = chain_ids(cfg.diff_ids)
            store.pin(chain)
            try:
                for layer, diff_id, chain_id in zip(image.layers, cfg.diff_ids, chain,
                                                    strict=True):
                    if store.has_layer(chain_id):
                        continue
                    tmp = store.new_tmp()
                    try:
                        (tmp / "diff").mkdir()
                        try:
                            stats = _unpack(archive, layer, tmp / "diff")
                        except UnsafeLayer as exc:  # LayerTooLarge among them
                            raise ImportError_(f"layer {layer.label}: {exc}") from exc
                        if stats.diff_id != diff_id:
                            raise ImportError_(f"layer {layer.label} unpacks to "
                                               f"{stats.diff_id}, the config says {diff_id}")
                        store.commit_layer(chain_id, tmp / "diff")
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                rec = store.images.get(config_digest) or ImageRecord(
                    id=config_digest, config_digest=config_digest,
                    # A docker-archive has no manifest; the config digest stands in for it.
                    manifest_digest=image.manifest_digest or config_digest, chain_ids=chain,
                    size=sum(store.layer_size(c) for c in chain), user=cfg.user,
                    pulled_at=time.time_ns())
                for t in [*image.tags, *([_tag(extra_tag)] if extra_tag else [])]:
                    if t not in rec.repo_tags:
                        rec.repo_tags.append(t)
                # The image exists once its record does: its layers are on disk by then.
                unsynced = [c for c in chain if store.unsynced(c)]
                if unsynced:
                    store.sync_layers(unsynced)
                store.put_blob(config_digest, image.config)
                store.save(rec)
                done.append(rec)
            finally:
                store.unpin(chain)
    return done
