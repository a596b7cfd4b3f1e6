from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import pytest

from cri.image import manifest as m

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def desc(media: str = m.OCI_LAYER_GZIP, digest: str = D1, size: Any = 10, **kw: object) -> dict[str, Any]:
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


def _index_of(*platforms: dict[str, str]) -> m.Index:
    entries = [desc(m.OCI_MANIFEST, "sha256:" + f"{i:x}" * 64, platform=p)
               for i, p in enumerate(platforms)]
    idx = m.parse_manifest(json.dumps({"schemaVersion": 2, "manifests": entries}).encode(),
                           m.OCI_INDEX)
    assert isinstance(idx, m.Index)
    return idx


def _pick(idx: m.Index, **kw: str) -> int:
    return int(m.select_platform(idx, m.Platform("linux", "amd64"), **kw).digest[-1], 16)


def test_platform_variant_fallbacks() -> None:
    idx = _index_of({"os": "linux", "architecture": "arm", "variant": "v6"},
                    {"os": "linux", "architecture": "arm"},  # no variant: v7
                    {"os": "linux", "architecture": "arm64"},  # no variant: v8
                    {"os": "linux", "architecture": "amd64", "variant": "v3"},
                    {"os": "unknown", "architecture": "unknown"})  # an attestation entry
    assert _pick(idx, arch="arm", variant="v7") == 1
    assert _pick(idx, arch="arm", variant="v6") == 0  # never the newer v7 on a v6 CPU
    assert _pick(idx, arch="arm", variant="v8") == 1  # armv8l runs v7 code
    assert _pick(idx, arch="arm64", variant="v8") == 2
    assert _pick(idx, arch="amd64", variant="v4") == 3
    with pytest.raises(m.ManifestError) as err:
        _pick(idx)  # plain amd64 (v1) cannot run a v3-only image
    assert "linux/amd64 in the index" in str(err.value)
    assert "linux/arm/v6, linux/arm, linux/arm64, linux/amd64/v3)" in str(err.value)
    with pytest.raises(m.ManifestError, match="no image for windows/arm64 in"):
        _pick(idx, os="windows", arch="arm64")


def test_host_platform_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, want in [("x86_64", ("amd64", "")), ("aarch64", ("arm64", "")),
                          ("s390x", ("s390x", "")), ("armv7l", ("arm", "v7"))]:
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert m.host_platform() == m.Platform("linux", *want)
    assert m.select_platform(_index()).digest.startswith("sha256:3")  # armv7l host


@pytest.mark.parametrize("doc,ctype,match", [
    # CVE-2021-41190: an index that is also an image.
    ({"mediaType": m.OCI_INDEX, "manifests": [], "layers": []}, "", "ambiguous"),
    ({"manifests": [], "config": desc(m.OCI_CONFIG)}, m.OCI_MANIFEST, "ambiguous"),
    ({"mediaType": m.DOCKER_MANIFEST, "config": desc(m.DOCKER_CONFIG), "layers": []},
     m.OCI_MANIFEST, "served as"),
    ({"mediaType": m.OCI_MANIFEST, "layers": []}, "", "config"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG)}, "", "layers"),
    ({"mediaType": m.OCI_INDEX}, "", "manifests"),
    ({"schemaVersion": 3, "mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG),
      "layers": []}, "", "schemaVersion"),
    ({"mediaType": m.DOCKER_SCHEMA1[1], "fsLayers": []}, "", "schema 1"),
    ({"schemaVersion": 2, "fsLayers": [], "name": "x"}, m.DOCKER_SCHEMA1[0], "schema 1"),
    ({"mediaType": 5}, "", "not a string"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG, digest="sha256:" + "A" * 64),
      "layers": []}, "", "invalid digest"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG, digest="md5:" + "a" * 32),
      "layers": []}, "", "invalid digest"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG, digest="sha512:" + "a" * 64),
      "layers": []}, "", "invalid digest"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG, size="10"), "layers": []}, "",
     "size"),
    ({"mediaType": m.OCI_MANIFEST, "config": {"digest": D1, "size": 1}, "layers": []}, "",
     "mediaType missing"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG),
      "layers": [desc(urls="http://x")]}, "", "urls"),
    ({"mediaType": m.OCI_MANIFEST, "config": desc(m.OCI_CONFIG, annotations={"a": 1}),
      "layers": []}, "", "annotations"),
    ({"mediaType": m.OCI_INDEX, "manifests": [desc(m.OCI_MANIFEST, platform={"os": "linux"})]},
     "", "platform"),
])
def test_more_bad_manifests(doc: dict[str, Any], ctype: str, match: str) -> None:
    with pytest.raises(m.ManifestError, match=match):
        m.parse_manifest(json.dumps(doc).encode(), ctype)


def test_media_type_sources_and_foreign_layers() -> None:
    sha512 = "sha512:" + "b" * 128
    doc = {"schemaVersion": 2, "config": desc(m.DOCKER_CONFIG, sha512),
           "layers": [desc(m.DOCKER_LAYER_GZIP), desc(m.DOCKER_LAYER_FOREIGN, D2,
                                                      urls=["https://example/base.tgz"])]}
    body = json.dumps(doc).encode()
    # Header with parameters and odd case; a generic header defers to the body / the shape.
    man = m.parse_manifest(body, m.DOCKER_MANIFEST.upper() + "; charset=utf-8")
    assert isinstance(man, m.Manifest) and man.media_type == m.DOCKER_MANIFEST
    assert man.config.digest == sha512
    assert [ly.foreign for ly in man.layers] == [False, True]
    assert man.layers[1].urls == ("https://example/base.tgz",)
    assert m.parse_manifest(json.dumps({**doc, "mediaType": m.OCI_MANIFEST}).encode(),
                            "application/json").media_type == m.OCI_MANIFEST
    assert m.parse_manifest(body, "").media_type == m.OCI_MANIFEST
    assert m.parse_manifest(body, "application/octet-stream").media_type == m.OCI_MANIFEST
    exact = b" " * (m.MAX_MANIFEST_BYTES - len(body)) + body  # at the cap is fine
    assert isinstance(m.parse_manifest(exact, m.DOCKER_MANIFEST), m.Manifest)
    for t in (m.OCI_LAYER_ZSTD, m.OCI_LAYER_TAR, m.DOCKER_LAYER_TAR):
        assert t in m.LAYER_TYPES and t not in m.FOREIGN_LAYER_TYPES


def test_streaming_verifier_edges() -> None:
    data = b"abc" * 1000
    digest = m.digest_of(data)
    wrong = m.DigestVerifier(m.digest_of(b"other" * 600), len(data))
    wrong.update(data)
    with pytest.raises(m.DigestMismatch, match="does not match"):
        wrong.finish()
    sha512 = m.DigestVerifier(m.digest_of(data, "sha512"), len(data))
    for i in range(0, len(data), 7):
        sha512.update(data[i:i + 7])
    sha512.finish()
    with pytest.raises(m.ManifestError, match="negative"):
        m.DigestVerifier(digest, -1)
    with pytest.raises(m.ManifestError, match="invalid digest"):
        m.DigestVerifier("sha256:xyz", 3)
    with pytest.raises(m.ManifestError, match="invalid digest"):
        m.verify_digest(data, "SHA256:" + digest[7:])
    assert issubclass(m.DigestMismatch, m.ManifestError) and issubclass(m.ManifestError, ValueError)


def test_image_config_fields_and_caps() -> None:
    body = json.dumps({"created": "2024-01-01T00:00:00Z", "architecture": "arm64", "os": "linux",
                       "config": {"Entrypoint": ["/init"], "Cmd": None, "WorkingDir": "/srv",
                                  "User": "1000"},
                       "rootfs": {"type": "layers", "diff_ids": [D1, D2]}}).encode()
    cfg = m.parse_image_config(body)
    assert (cfg.entrypoint, cfg.cmd, cfg.working_dir, cfg.user, cfg.labels) == (
        ("/init",), (), "/srv", "1000", {})
    assert (cfg.created, cfg.architecture, cfg.os, cfg.diff_ids) == (
        "2024-01-01T00:00:00Z", "arm64", "linux", (D1, D2))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"config": {"Env": "A=1"}}, "Env"),
        ({"config": {"Labels": ["x"]}}, "Labels"),
        ({"config": {"User": 0}}, "User"),
        ({"rootfs": {"diff_ids": ["sha256:short"]}}, "invalid digest")]
    for bad, match in cases:
        doc: dict[str, Any] = {"rootfs": {"diff_ids": []}, **bad}
        with pytest.raises(m.ManifestError, match=match):
            m.parse_image_config(json.dumps(doc).encode())
    with pytest.raises(m.ManifestError, match="cap"):
        m.parse_image_config(b" " * m.MAX_MANIFEST_BYTES + b"{}")


def test_uid_username_edges() -> None:
    assert m.uid_username("0") == (0, "")
    assert m.uid_username(str(2**32 - 2)) == (2**32 - 2, "")
    assert m.uid_username(":1004") == (None, "")
    assert m.uid_username("nobody:nogroup") == (None, "nobody")
    for over in (str(2**32 - 1), str(2**32), "99999999999999999999", "1000:4294967296"):
        with pytest.raises(m.ManifestError, match="largest"):
            m.uid_username(over)
    # Non-ASCII digits are names, not numbers (int("١٢") would be 12).
    assert m.uid_username("\u0661\u0662") == (None, "\u0661\u0662")
    assert m.uid_username("\u00b2") == (None, "\u00b2")
