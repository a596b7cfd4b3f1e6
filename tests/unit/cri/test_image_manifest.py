from __future__ import annotations

import hashlib
import json

import pytest

from cri.image import manifest as m

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def desc(media: str = m.OCI_LAYER_GZIP, digest: str = D1, size: int = 10, **kw: object) -> dict:
    return {"mediaType": media, "digest": digest, "size": size, **kw}


def test_manifest_and_index() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
                       "config": desc(m.OCI_CONFIG), "layers": [desc(), desc(digest=D2)]}).encode()
    man = m.parse_manifest(body, m.OCI_MANIFEST)
    assert isinstance(man, m.Manifest)
    assert [ly.digest for ly in man.layers] == [D1, D2] and man.config.media_type == m.OCI_CONFIG
    # No mediaType in the body: the Content-Type header decides.
    docker = json.dumps({"schemaVersion": 2, "config": desc(m.DOCKER_CONFIG),
                         "layers": []}).encode()
    assert m.parse_manifest(docker, m.DOCKER_MANIFEST).media_type == m.DOCKER_MANIFEST


def _index() -> m.Index:
    entries = [desc(m.OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
               desc(m.OCI_MANIFEST, D2, platform={"os": "linux", "architecture": "arm64",
                                                  "variant": "v8"}),
               desc(m.OCI_MANIFEST, "sha256:" + "3" * 64,
                    platform={"os": "linux", "architecture": "arm", "variant": "v7"})]
    idx = m.parse_manifest(json.dumps({"schemaVersion": 2, "mediaType": m.OCI_INDEX,
                                       "manifests": entries}).encode())
    assert isinstance(idx, m.Index)
    return idx


def test_platform_selection() -> None:
    idx = _index()
    assert m.select_platform(idx, m.Platform("linux", "amd64")).digest == D1
    assert m.select_platform(idx, m.Platform("linux", "arm64")).digest == D2  # v8 default
    assert m.select_platform(idx, m.Platform("linux", "arm", "v7")).digest.startswith("sha256:3")
    with pytest.raises(m.ManifestError, match="linux/amd64, linux/arm64/v8, linux/arm/v7"):
        m.select_platform(idx, m.Platform("linux", "s390x"))
    assert m.select_platform(idx).platform is not None  # this host's platform


@pytest.mark.parametrize("body,ctype,match", [
    (b"x" * (m.MAX_MANIFEST_BYTES + 1), "", "cap"),
    (b"[]", "", "object"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "", "schema 1"),
    (json.dumps({"mediaType": m.OCI_MANIFEST, "config": desc(digest="sha256:abc"),
                 "layers": []}).encode(), "", "invalid digest"),
    (json.dumps({"mediaType": m.OCI_MANIFEST, "config": desc(size=-1), "layers": []}).encode(),
     "", "size"),
    (json.dumps({"mediaType": m.OCI_INDEX, "manifests": []}).encode(), m.OCI_MANIFEST,
     "served as"),
    (json.dumps({"mediaType": "text/plain"}).encode(), "", "unsupported"),
])
def test_bad_manifests(body: bytes, ctype: str, match: str) -> None:
    with pytest.raises(m.ManifestError, match=match):
        m.parse_manifest(body, ctype)


def test_digest_checks() -> None:
    data = b"hello layer"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    m.verify_digest(data, digest)
    with pytest.raises(m.DigestMismatch):
        m.verify_digest(data + b"!", digest)
    v = m.DigestVerifier(digest, len(data))
    v.update(data[:4])
    v.update(data[4:])
    v.finish()
    short = m.DigestVerifier(digest, len(data))
    short.update(data[:3])
    with pytest.raises(m.DigestMismatch, match="3 of"):
        short.finish()
    long = m.DigestVerifier(digest, 2)
    with pytest.raises(m.DigestMismatch, match="more than"):
        long.update(data)


def test_image_config_and_users() -> None:
    body = json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"User": "www-data:1004", "Env": ["A=1"], "Cmd": ["sh"],
                                  "StopSignal": "SIGQUIT", "Labels": {"k": "v"}},
                       "rootfs": {"type": "layers", "diff_ids": [D1]}}).encode()
    cfg = m.parse_image_config(body)
    assert (cfg.user, cfg.env, cfg.cmd, cfg.stop_signal, cfg.diff_ids) == (
        "www-data:1004", ("A=1",), ("sh",), "SIGQUIT", (D1,))
    assert m.uid_username("1002") == (1002, "")
    assert m.uid_username("www-data") == (None, "www-data")
    assert m.uid_username("1003:1004") == (1003, "")
    assert m.uid_username("www-data:1004") == (None, "www-data")
    assert m.uid_username("") == (None, "")
    with pytest.raises(m.ManifestError, match="largest uid"):
        m.uid_username(str(2**32))
    with pytest.raises(m.ManifestError, match="diff_ids"):
        m.parse_image_config(b'{"config": {}}')
