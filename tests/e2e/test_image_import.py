"""Offline import into a running daemon: an OCI layout (dir and tar) and a docker-archive."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from cri.api import api_pb2
from cri.image import manifest as m
from tests.e2e.helpers import REPO, Daemon
from tests.fixtures.images import busybox_layers

pytestmark = pytest.mark.e2e


def _config(diff_ids: list[str], tag: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"User": "1002", "Labels": {"t": tag}},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def oci_layout(dest: Path, ref_name: str, tag: str) -> str:
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    layers = busybox_layers(tag)
    descs = [{"mediaType": m.OCI_LAYER_GZIP, "digest": put(gzip.compress(ly, mtime=0)),
              "size": len(gzip.compress(ly, mtime=0))} for ly in layers]
    config = _config(["sha256:" + hashlib.sha256(ly).hexdigest() for ly in layers], tag)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
                           "config": {"mediaType": m.OCI_CONFIG, "digest": put(config),
                                      "size": len(config)},
                           "layers": descs}).encode()
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": m.OCI_MANIFEST, "digest": put(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return "sha256:" + hashlib.sha256(config).hexdigest()


def docker_archive(dest: Path, repo_tag: str, tag: str) -> str:
    work = dest.with_suffix(".d")
    work.mkdir()
    layers = busybox_layers(tag)
    names = []
    for i, ly in enumerate(layers):
        (work / f"l{i}.tar").write_bytes(ly)
        names.append(f"l{i}.tar")
    config = _config(["sha256:" + hashlib.sha256(ly).hexdigest() for ly in layers], tag)
    cid = hashlib.sha256(config).hexdigest()
    (work / f"{cid}.json").write_bytes(config)
    (work / "manifest.json").write_text(json.dumps(
        [{"Config": f"{cid}.json", "RepoTags": [repo_tag], "Layers": names}]))
    with tarfile.open(dest, "w") as tf:
        for p in sorted(work.iterdir()):
            tf.add(p, arcname=p.name)
    return f"sha256:{cid}"


def import_(daemon: Daemon, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri", "image", "import", str(path),
                           "--config", str(daemon.config_path), *extra],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def wait_status(daemon: Daemon, spec: str) -> api_pb2.Image | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = daemon.image().ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=spec)), timeout=5)
        if resp.HasField("image"):
            return resp.image
        time.sleep(0.05)
    return None


def rmi(daemon: Daemon, spec: str) -> None:
    daemon.image().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=spec)),
                               timeout=30)


def test_import_oci_layout_dir_and_archive(daemon: Daemon, rt, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image_id = oci_layout(layout, "import.test/app:v1", "oci")
    out = import_(daemon, layout, "--tag", "import.test/app:extra")
    assert out.returncode == 0, out.stderr
    img = wait_status(daemon, "import.test/app:v1")
    assert img is not None and img.id == image_id
    assert set(img.repo_tags) == {"import.test/app:v1", "import.test/app:extra"}
    assert img.uid.value == 1002
    rmi(daemon, image_id)
    archive = tmp_path / "layout.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(layout, arcname=".")
    assert import_(daemon, archive).returncode == 0
    assert wait_status(daemon, "import.test/app:v1") is not None
    rmi(daemon, image_id)


def test_import_docker_archive(daemon: Daemon, rt, tmp_path: Path) -> None:
    image_id = docker_archive(tmp_path / "saved.tar", "busybox:imported", "docker")
    out = import_(daemon, tmp_path / "saved.tar")
    assert out.returncode == 0, out.stderr
    img = wait_status(daemon, "busybox:imported")
    assert img is not None and img.id == image_id
    assert list(img.repo_tags) == ["docker.io/library/busybox:imported"]
    rmi(daemon, image_id)
    assert not list((daemon.root / "images" / "layers").iterdir())


def test_import_refuses_garbage(daemon: Daemon, rt, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive" * 100)
    out = import_(daemon, junk)
    assert out.returncode == 1 and "cannot import" in out.stderr
