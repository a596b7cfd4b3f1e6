"""Manifests, indexes and image configs (OCI image-spec and Docker schema 2), sans-IO.

Everything a registry sends is capped in size and checked by digest before it is used
(CVE-2021-32760 and friends: never trust content that was not verified).
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
import re
from dataclasses import dataclass, field
from typing import Any

MAX_MANIFEST_BYTES = 4 << 20  # manifests, indexes and configs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
LAYER_TYPES = (OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR)

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}
UID_MAX = 2**32 - 1


class ManifestError(ValueError):
    """Content that is not a usable manifest, index or config; the message says why."""


class DigestMismatch(ManifestError):
    pass


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    diff_ids: tuple[str, ...] = ()
    created: str = ""
    architecture: str = ""
    os: str = ""


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ManifestError(f"invalid digest {digest!r}")
    return digest


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, digest: str) -> None:
    algorithm = check_digest(digest).split(":", 1)[0]
    got = digest_of(data, algorithm)
    if got != digest:
        raise DigestMismatch(f"content digest {got} does not match {digest}")


class DigestVerifier:
    """Streaming check of a blob against its descriptor: size and digest."""

    def __init__(self, digest: str, size: int) -> None:
        self.digest = check_digest(digest)
        self.size = size
        self.seen = 0
        self._hash = hashlib.new(self.digest.split(":", 1)[0])

    def update(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if self.seen > self.size:
            raise DigestMismatch(f"blob {self.digest}: more than the {self.size} bytes announced")
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.seen != self.size:
            raise DigestMismatch(f"blob {self.digest}: got {self.seen} of {self.size} bytes")
        got = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if got != self.digest:
            raise DigestMismatch(f"blob digest {got} does not match {self.digest}")


def _load(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{what} is {len(body)} bytes, over the {MAX_MANIFEST_BYTES} cap")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return data


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{what}: not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(f"{what}: mediaType missing")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{what}: size must be a non-negative integer")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")),
                            str(plat.get("variant", "")))
    annotations = raw.get("annotations") or {}
    urls = raw.get("urls") or []
    return Descriptor(media_type, check_digest(digest), size, platform,
                      {str(k): str(v) for k, v in annotations.items()},
                      tuple(str(u) for u in urls))


def parse_manifest(body: bytes, content_type: str = "") -> Manifest | Index:
    """A manifest or index; the body's mediaType wins, the header fills in when it is absent,
    and the two disagreeing is an error (a confused or malicious registry)."""
    data = _load(body, "manifest")
    declared = data.get("mediaType")
    header = content_type.split(";", 1)[0].strip()
    if declared and header and header in (*MANIFEST_TYPES, *INDEX_TYPES) and declared != header:
        raise ManifestError(f"manifest says {declared} but was served as {header}")
    media_type = declared or header
    if media_type in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported")
    if not media_type:
        media_type = OCI_INDEX if "manifests" in data else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no manifests list")
        return Index(media_type, tuple(_descriptor(m, f"index.manifests[{i}]")
                                       for i, m in enumerate(entries)))
    if media_type not in MANIFEST_TYPES:
        raise ManifestError(f"unsupported manifest media type {media_type!r}")
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise ManifestError("manifest has no layers list")
    return Manifest(media_type, _descriptor(data.get("config"), "manifest.config"),
                    tuple(_descriptor(ly, f"manifest.layers[{i}]") for i, ly in enumerate(layers)))


def host_platform() -> Platform:
    machine = _platform.machine()
    arch = _ARCH.get(machine, machine)
    variant = "v7" if machine == "armv7l" else ("v6" if machine == "armv6l" else "")
    return Platform("linux", arch, variant)


def select_platform(index: Index, want: Platform | None = None) -> Descriptor:
    """The index entry for ``want`` (default: this host). arm64's variant defaults to v8."""
    want = want or host_platform()

    def variant(p: Platform) -> str:
        return p.variant or ("v8" if p.architecture == "arm64" else "")

    candidates = [d for d in index.manifests if d.platform is not None
                  and d.platform.os == want.os and d.platform.architecture == want.architecture]
    for d in candidates:
        assert d.platform is not None
        if variant(d.platform) == variant(want):
            return d
    if candidates and not want.variant:
        return candidates[0]
    have = ", ".join(
        f"{d.platform.os}/{d.platform.architecture}"
        + (f"/{d.platform.variant}" if d.platform.variant else "")
        for d in index.manifests if d.platform is not None
    ) or "none"
    target = f"{want.os}/{want.architecture}" + (f"/{want.variant}" if want.variant else "")
    raise ManifestError(f"no image for {target} in the index (it has: {have})")


def parse_image_config(body: bytes) -> ImageConfig:
    data = _load(body, "image config")
    cfg = data.get("config") or {}
    if not isinstance(cfg, dict):
        raise ManifestError("image config: config is not an object")
    rootfs = data.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ManifestError("image config: rootfs.diff_ids missing")

    def strings(key: str) -> tuple[str, ...]:
        value = cfg.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ManifestError(f"image config: config.{key} must be a list of strings")
        return tuple(value)

    return ImageConfig(
        user=str(cfg.get("User") or ""),
        env=strings("Env"),
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        working_dir=str(cfg.get("WorkingDir") or ""),
        stop_signal=str(cfg.get("StopSignal") or ""),
        labels={str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()},
        diff_ids=tuple(check_digest(d) for d in diff_ids),
        created=str(data.get("created") or ""),
        architecture=str(data.get("architecture") or ""),
        os=str(data.get("os") or ""),
    )


def uid_username(user: str) -> tuple[int | None, str]:
    """ImageStatus's uid / username from a config User: "1002" -> uid 1002, "www-data" ->
    username; a group after ':' is ignored. A numeric uid over 2^32-1 is an error, never root
    (CVE-2024-40635)."""
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        uid = int(name)
        if uid > UID_MAX:
            raise ManifestError(f"image user {name} is above the largest uid {UID_MAX}")
        return uid, ""
    return None, name
