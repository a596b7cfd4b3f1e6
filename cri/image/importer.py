"""Offline import: seed the image store from an OCI image layout (a directory or a tar of one)
or a docker-archive tar (``docker save``), for nodes that cannot reach a registry.

Everything is verified as in a pull: blobs by digest, layers unpacked safely and checked
against the config's diff_ids. The image record is written last; a running daemon sees it
through its watch on the records directory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cri.image import manifest as mf
from cri.image.reference import InvalidReference, parse
from cri.image.store import ImageRecord, ImageStore, chain_ids
from cri.image.unpack import UnsafeLayer, unpack_image_layer

REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ImportError_(ValueError):
    """The archive is not an image this importer understands; the message says why."""


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Path]:
    """A directory with the archive's content (the path itself when it is a directory)."""
    if path.is_dir():
        yield path
        return
    if not hasattr(tarfile, "data_filter"):  # PEP 706 filters: Python >= 3.11.4
        raise ImportError_("importing an archive needs a Python with tarfile extraction filters")
    with tempfile.TemporaryDirectory(prefix="pycri-import-") as tmp:
        try:
            with tarfile.open(path) as tf:
                tf.extractall(tmp, filter="data")  # the stdlib's safe filter: no escapes
        except (tarfile.TarError, OSError) as exc:
            raise ImportError_(f"{path}: not a readable archive: {exc}") from exc
        yield Path(tmp)


def _blob(root: Path, digest: str) -> Path:
    algo, _, hexpart = mf.check_digest(digest).partition(":")
    return root / "blobs" / algo / hexpart


def _verified(path: Path, digest: str, limit: int | None = None) -> bytes:
    size = path.stat().st_size
    if limit is not None and size > limit:
        raise ImportError_(f"{path.name} is {size} bytes, over the {limit} cap")
    data = path.read_bytes()
    mf.verify_digest(data, digest)
    return data


def _verify_layer(path: Path, desc: mf.Descriptor) -> None:
    """Size and digest of a layer blob, read in pieces (layers can be gigabytes)."""
    verifier = mf.DigestVerifier(desc.digest, desc.size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            verifier.update(chunk)
    verifier.finish()


def _tag(name: str) -> str:
    try:
        return str(parse(name).normalize())
    except InvalidReference as exc:
        raise ImportError_(f"image name {name!r}: {exc}") from exc


def _images_oci(root: Path) -> list[tuple[list[str], bytes, list[tuple[Path, str]], str]]:
    index = json.loads((root / "index.json").read_bytes())
    out = []
    for desc in index.get("manifests", []):
        body = _verified(_blob(root, desc["digest"]), desc["digest"], mf.MAX_MANIFEST_BYTES)
        parsed = mf.parse_manifest(body, desc.get("mediaType", ""))
        if isinstance(parsed, mf.Index):
            chosen = mf.select_platform(parsed)
            body = _verified(_blob(root, chosen.digest), chosen.digest, mf.MAX_MANIFEST_BYTES)
            parsed = mf.parse_manifest(body, chosen.media_type)
            if not isinstance(parsed, mf.Manifest):
                raise ImportError_("nested index")
        config = _verified(_blob(root, parsed.config.digest), parsed.config.digest,
                           mf.MAX_MANIFEST_BYTES)
        layers = []
        for ly in parsed.layers:
            path = _blob(root, ly.digest)
            if ly.foreign and not path.exists():
                # Layouts may leave non-distributable layers out; they are not fetched here.
                raise ImportError_(f"foreign layer {ly.digest} is not in the archive; pycri "
                                   "does not download foreign layers")
            _verify_layer(path, ly)
            layers.append((path, ly.media_type))
        # ref.name is a full reference in most tools' output, or only a tag (which needs a
        # name from --tag); a bare word is taken as the latter.
        name = (desc.get("annotations") or {}).get(REF_ANNOTATION, "")
        tags = [_tag(name)] if "/" in name or ":" in name else []
        out.append((tags, config, layers, mf.digest_of(body)))
    return out


def _images_docker(root: Path) -> list[tuple[list[str], bytes, list[tuple[Path, str]], str]]:
    entries: list[dict[str, Any]] = json.loads((root / "manifest.json").read_bytes())
    out = []
    for entry in entries:
        config_path = (root / entry["Config"]).resolve()
        if root.resolve() not in config_path.parents:
            raise ImportError_(f"config path {entry['Config']!r} leaves the archive")
        config = config_path.read_bytes()
        layers = []
        for rel in entry["Layers"]:
            p = (root / rel).resolve()
            if root.resolve() not in p.parents:
                raise ImportError_(f"layer path {rel!r} leaves the archive")
            layers.append((p, ""))
        tags = [_tag(t) for t in entry.get("RepoTags") or []]
        out.append((tags, config, layers, ""))
    return out


def import_images(store: ImageStore, path: Path, extra_tag: str = "") -> list[ImageRecord]:
    """Import every image in ``path``; returns their records (the daemon picks them up)."""
    done = []
    with store.locked(), _opened(path) as root:
        if (root / "index.json").exists():
            images = _images_oci(root)
        elif (root / "manifest.json").exists():
            images = _images_docker(root)
        else:
            raise ImportError_(f"{path}: neither an OCI layout (index.json) nor a docker-archive "
                               "(manifest.json)")
        for tags, config, layers, manifest_digest in images:
            cfg = mf.parse_image_config(config)
            if len(cfg.diff_ids) != len(layers):
                raise ImportError_(f"{len(layers)} layers but {len(cfg.diff_ids)} diff_ids")
            config_digest = mf.digest_of(config)
            chain = chain_ids(cfg.diff_ids)
            store.pin(chain)
            try:
                for (layer_path, media_type), diff_id, chain_id in zip(
                        layers, cfg.diff_ids, chain, strict=True):
                    if store.has_layer(chain_id):
                        continue
                    tmp = store.new_tmp()
                    try:
                        (tmp / "diff").mkdir()
                        with layer_path.open("rb") as f:
                            try:
                                stats = unpack_image_layer(f, tmp / "diff", media_type=media_type)
                            except UnsafeLayer as exc:  # LayerTooLarge among them
                                raise ImportError_(f"layer {layer_path.name}: {exc}") from exc
                        if stats.diff_id != diff_id:
                            raise ImportError_(f"layer {layer_path.name} unpacks to "
                                               f"{stats.diff_id}, the config says {diff_id}")
                        store.commit_layer(chain_id, tmp / "diff")
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                rec = store.images.get(config_digest) or ImageRecord(
                    id=config_digest, config_digest=config_digest,
                    # A docker-archive has no manifest; the config digest stands in for it.
                    manifest_digest=manifest_digest or config_digest, chain_ids=chain,
                    size=sum(store.layer_size(c) for c in chain), user=cfg.user,
                    pulled_at=time.time_ns())
                for t in [*tags, *([_tag(extra_tag)] if extra_tag else [])]:
                    if t not in rec.repo_tags:
                        rec.repo_tags.append(t)
                store.put_blob(config_digest, config)
                store.save(rec)
                done.append(rec)
            finally:
                store.unpin(chain)
    return done
