"""Offline import of an OCI layout or a docker-archive: the same layer limits as a pull, foreign
layers, cleanup; archives read in place (no tarfile extraction, so no need for its filters) and
crafted archives refused without a byte written outside the image store."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from cri.image import manifest as m
from cri.image import unpack
from cri.image.archive import ArchiveError
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
    with pytest.raises(ImportError_, match=rf"layer sha256:{layer_hex}: .*more than 4096 bytes"):
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


Member = tuple[str, bytes | str]  # a regular file (bytes) or a symlink (its target)


def _tar_bytes(members: list[Member]) -> bytes:
    """Exactly these members, in this order (tar_layer adds parent directories)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in members:
            ti = tarfile.TarInfo(name)
            if isinstance(content, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, content
                tf.addfile(ti)
            else:
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def _tar(dest: Path, members: list[Member], *, compress: bool = False) -> Path:
    raw = _tar_bytes(members)
    dest.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return dest


def _directory(dest: Path, members: list[Member]) -> Path:
    for name, content in members:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(content if isinstance(content, bytes) else b"")
    return dest


def _layout_members(layout: Path) -> list[Member]:
    return [(str(p.relative_to(layout)), p.read_bytes())
            for p in sorted(layout.rglob("*")) if p.is_file()]


def _docker_members(raw_layers: list[bytes], *, layer_names: list[str] | None = None,
                    config_name: str = "") -> list[Member]:
    """A docker-archive (``docker save``): the config, one tar per layer, manifest.json."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in raw_layers]}})
    config_name = config_name or hashlib.sha256(config.encode()).hexdigest() + ".json"
    names = layer_names or [f"l{i}/layer.tar" for i in range(len(raw_layers))]
    members: list[Member] = [(config_name, config.encode())]
    members += [(n, raw) for n, raw in zip(names, raw_layers, strict=False)]
    manifest = [{"Config": config_name, "RepoTags": ["example.com/saved:v1"], "Layers": names}]
    return [*members, ("manifest.json", json.dumps(manifest).encode())]


def _layer_file(store: ImageStore, rec_chain_id: str, name: str) -> bytes:
    return (store.layers / rec_chain_id.split(":", 1)[1] / "diff" / name).read_bytes()


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_archives_are_read_without_tarfile_extraction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    # As on Debian 12's Python 3.11.2: no PEP 706 extraction filters. And nothing may extract.
    for attr in ("data_filter", "tar_filter", "fully_trusted_filter"):
        monkeypatch.delattr(tarfile, attr, raising=False)

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("the importer extracted an archive member through tarfile")

    for method in ("extractall", "extract", "_extract_member"):
        monkeypatch.setattr(tarfile.TarFile, method, no_extraction)
    layout = _layout(tmp_path, [tar_layer({"etc/os": b"layout"})])
    oci = _tar(tmp_path / "oci.tar", _layout_members(layout), compress=compress)
    saved = _tar(tmp_path / "saved.tar", _docker_members([tar_layer({"etc/os": b"saved"})]),
                 compress=compress)
    store = _store(tmp_path)
    (rec,) = import_images(store, oci)
    assert rec.repo_tags == ["example.com/app:v1"]
    assert _layer_file(store, rec.chain_ids[0], "etc/os") == b"layout"
    (rec,) = import_images(store, saved)
    assert rec.repo_tags == ["example.com/saved:v1"]
    assert _layer_file(store, rec.chain_ids[0], "etc/os") == b"saved"


def test_a_docker_archive_layer_may_be_a_symlink_to_another_member(tmp_path: Path) -> None:
    # docker save writes an identical layer once and links to it from the second place.
    raw = tar_layer({"a": b"a"})
    members = _docker_members([raw, raw], layer_names=["l0/layer.tar", "l1/layer.tar"])
    members = [(n, "../l0/layer.tar" if n == "l1/layer.tar" else c) for n, c in members]
    store = _store(tmp_path)
    (rec,) = import_images(store, _tar(tmp_path / "saved.tar", members))
    assert len(rec.chain_ids) == 2


def _assert_nothing_imported(store: ImageStore, tmp_path: Path) -> None:
    assert store.images == {} and list(store.layers.iterdir()) == []
    assert list(store.tmp.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize(("members", "error"), [
    pytest.param(lambda t: [("../escaped", b"x")], "member '../escaped': climbs out",
                 id="member-dotdot"),
    pytest.param(lambda t: [("a/../../escaped", b"x")], "climbs out", id="member-inner-dotdot"),
    pytest.param(lambda t: [(f"{t}/escaped", b"x")], "absolute name", id="member-absolute"),
    pytest.param(lambda t: [("l0/layer.tar", "../../etc/passwd")], "outside the archive",
                 id="layer-symlink-dotdot"),
    pytest.param(lambda t: [("l0/layer.tar", "/etc/passwd")], "outside the archive",
                 id="layer-symlink-absolute"),
])
def test_an_archive_member_leaving_the_archive_is_refused(
        tmp_path: Path, members: object, error: str) -> None:
    extra: list[Member] = members(tmp_path)  # type: ignore[operator]
    base = _docker_members([tar_layer({"a": b"a"})])
    names = {n for n, _ in extra}
    archive = _tar(tmp_path / "evil.tar", [*extra, *[m for m in base if m[0] not in names]])
    store = _store(tmp_path)
    with pytest.raises(ArchiveError, match=error):
        import_images(store, archive)
    _assert_nothing_imported(store, tmp_path)


@pytest.mark.parametrize("ref", ["../escaped.json", "/etc/passwd", "a/../../x"])
def test_a_docker_manifest_naming_a_path_outside_the_archive_is_refused(
        tmp_path: Path, ref: str) -> None:
    members = _docker_members([tar_layer({"a": b"a"})])
    manifest = json.loads(dict(members)["manifest.json"])
    manifest[0]["Config"] = ref
    members = [*members[:-1], ("manifest.json", json.dumps(manifest).encode())]
    store = _store(tmp_path)
    with pytest.raises(ArchiveError, match=r"climbs out|absolute name"):
        import_images(store, _tar(tmp_path / "evil.tar", members))
    # The same manifest in a directory: also refused, not read through the filesystem.
    saved = _directory(tmp_path / "saved", members)
    with pytest.raises(ArchiveError, match=r"climbs out|absolute name"):
        import_images(store, saved)
    _assert_nothing_imported(store, tmp_path)


def test_a_symlink_out_of_a_directory_archive_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.tar"
    outside.write_bytes(tar_layer({"a": b"a"}))
    saved = _directory(tmp_path / "saved", _docker_members([tar_layer({"a": b"a"})]))
    (saved / "l0" / "layer.tar").unlink()
    (saved / "l0" / "layer.tar").symlink_to(outside)
    store = _store(tmp_path)
    with pytest.raises(ArchiveError, match="leads out of"):
        import_images(store, saved)
    _assert_nothing_imported(store, tmp_path)


@pytest.mark.parametrize("layer", [
    pytest.param(lambda t: _tar_bytes([("../escaped", b"x")]), id="dotdot"),
    pytest.param(lambda t: _tar_bytes([("link", str(t)), ("link/escaped", b"x")]),
                 id="symlink-absolute"),
    pytest.param(lambda t: _tar_bytes([("link", "../../../../../.." + str(t)),
                                       ("link/escaped", b"x")]), id="symlink-dotdot"),
])
def test_a_layer_escaping_its_directory_is_refused_by_the_unpacker(
        tmp_path: Path, layer: object) -> None:
    raw: bytes = layer(tmp_path)  # type: ignore[operator]
    store = _store(tmp_path)
    with pytest.raises(ImportError_, match=r"layer l0/layer.tar: entry"):
        import_images(store, _tar(tmp_path / "evil.tar", _docker_members([raw])))
    _assert_nothing_imported(store, tmp_path)


def test_a_tampered_layer_blob_in_an_archive_is_refused(tmp_path: Path) -> None:
    layout = _layout(tmp_path, [tar_layer({"a": b"a"})])
    manifest_blobs = [p for p in (layout / "blobs" / "sha256").iterdir()
                      if p.read_bytes().startswith(b"\x1f\x8b")]
    (blob,) = manifest_blobs
    blob.write_bytes(gzip.compress(tar_layer({"a": b"b"}), mtime=0))
    store = _store(tmp_path)
    with pytest.raises(m.DigestMismatch, match="blob"):
        import_images(store, _tar(tmp_path / "oci.tar", _layout_members(layout)))
    _assert_nothing_imported(store, tmp_path)


def test_an_oversized_index_is_refused_before_it_is_read(tmp_path: Path) -> None:
    members: list[Member] = [("index.json", b" " * (m.MAX_MANIFEST_BYTES + 1))]
    store = _store(tmp_path)
    with pytest.raises(ArchiveError, match=f"over the {m.MAX_MANIFEST_BYTES} cap"):
        import_images(store, _tar(tmp_path / "big.tar", members))
