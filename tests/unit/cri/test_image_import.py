"""Offline import of an OCI layout: the same layer limits as a pull, foreign layers, cleanup."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from cri.image import manifest as m
from cri.image import unpack
from cri.image.importer import ImportError_, import_images
from cri.image.store import ImageStore
from tests.fixtures.images import tar_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (chown)")


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layout(tmp_path: Path, raw_layers: list[bytes], *, foreign_missing: bool = False) -> Path:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers = [{"mediaType": m.OCI_LAYER_GZIP, **_blob(layout, gzip.compress(raw, mtime=0))}
              for raw in raw_layers]
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in raw_layers]
    if foreign_missing:
        absent = gzip.compress(tar_layer({"w": b"w"}), mtime=0)
        layers.append({"mediaType": m.OCI_LAYER_NONDIST_GZIP, "size": len(absent),
                       "digest": "sha256:" + hashlib.sha256(absent).hexdigest(),
                       "urls": ["https://example.invalid/w.tgz"]})
        diff_ids.append("sha256:" + "1" * 64)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
                           "config": {"mediaType": m.OCI_CONFIG, **_blob(layout, config)},
                           "layers": layers}).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": m.OCI_MANIFEST, **_blob(layout, manifest),
         "annotations": {"org.opencontainers.image.ref.name": "example.com/app:v1"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def _store(tmp_path: Path) -> ImageStore:
    store = ImageStore(tmp_path / "images")
    store.open()
    return store


def test_import_applies_the_layer_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tar_layer({"data": b"z" * 5000})
    layout = _layout(tmp_path, [big])
    monkeypatch.setattr(unpack, "MAX_LAYER_BYTES", 4096)
    store = _store(tmp_path)
    layer_hex = hashlib.sha256(gzip.compress(big, mtime=0)).hexdigest()
    with pytest.raises(ImportError_, match=rf"layer {layer_hex}: .*more than 4096 bytes"):
        import_images(store, layout)
    assert list(store.tmp.iterdir()) == [] and list(store.layers.iterdir()) == []
    assert store.images == {}
    monkeypatch.undo()
    (rec,) = import_images(store, layout)
    assert rec.repo_tags == ["example.com/app:v1"]


def test_import_names_a_foreign_layer_missing_from_the_layout(tmp_path: Path) -> None:
    layout = _layout(tmp_path, [tar_layer({"a": b"a"})], foreign_missing=True)
    store = _store(tmp_path)
    with pytest.raises(ImportError_, match=r"foreign layer sha256:[0-9a-f]+ is not in the archive"):
        import_images(store, layout)
    assert list(store.tmp.iterdir()) == [] and store.images == {}
