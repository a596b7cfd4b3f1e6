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
# Foreign / non-distributable layers: blobs the registry may not hold, to be fetched from the
# descriptor's urls (Windows base layers). Pulled from the registry like other layers when it
# has them; never from the urls (a manifest could send the node to any host), so a pull stops
# with an error naming them when the registry does not.
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
FOREIGN_LAYER_TYPES = (DOCKER_LAYER_FOREIGN, OCI_LAYER_NONDIST_TAR, OCI_LAYER_NONDIST_GZIP,
                       OCI_LAYER_NONDIST_ZSTD)
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
LAYER_TYPES = (OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv8l": "arm", "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_ARM_VARIANT = {"armv8l": "v8", "armv7l": "v7", "armv6l": "v6"}
_UINT = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts "²" and "١٢"
UID_MAX = 2**32 - 2  # 2^32-1 is (uid_t)-1, "leave unchanged" to setresuid(2): never a real uid


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

    @property
    def foreign(self) -> bool:
        """A foreign / non-distributable layer (see FOREIGN_LAYER_TYPES)."""
        return self.media_type in FOREIGN_LAYER_TYPES


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
        if size < 0:
            raise ManifestError(f"blob {digest}: negative size {size}")
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
    if plat is not None:
        if not isinstance(plat, dict):
            raise ManifestError(f"{what}: platform is not an object")
        os_, arch, variant = (plat.get(k, "") for k in ("os", "architecture", "variant"))
        if not all(isinstance(v, str) for v in (os_, arch, variant)) or not os_ or not arch:
            raise ManifestError(f"{what}: platform needs os and architecture strings")
        platform = Platform(os_, arch, variant)
    return Descriptor(media_type, check_digest(digest), size, platform,
                      _string_map(raw.get("annotations"), f"{what}.annotations"),
                      _strings(raw.get("urls"), f"{what}.urls"))


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError(f"{what} must map strings to strings")
    return dict(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{what} must be a list of strings")
    return tuple(value)


def parse_manifest(body: bytes, content_type: str = "") -> Manifest | Index:
    """A manifest or index; the body's mediaType wins, the header fills in when it is absent,
    and the two disagreeing is an error (a confused or malicious registry). A generic header
    (application/json, octet-stream) is no disagreement: it carries no manifest type.

    A body that has both ``manifests`` and ``config``/``layers`` is refused whatever it declares
    (CVE-2021-41190, GHSA-mc8v-mgrf-8f4m: one digest must not mean an index to one client and an
    image to another)."""
    data = _load(body, "manifest")
    declared = data.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("manifest mediaType is not a string")
    if "manifests" in data and ("config" in data or "layers" in data):
        raise ManifestError("ambiguous manifest: has both manifests and config/layers")
    header = content_type.split(";", 1)[0].strip().lower()
    if header not in (*MANIFEST_TYPES, *INDEX_TYPES, *DOCKER_SCHEMA1):
        header = ""  # generic (application/json, octet-stream): says nothing
    if declared and header and declared != header:
        raise ManifestError(f"manifest says {declared} but was served as {header}")
    media_type = declared or header
    if media_type in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1 or "fsLayers" in data:
        raise ManifestError("Docker schema 1 manifests are not supported")
    version = data.get("schemaVersion")
    if version is not None and (version != 2 or isinstance(version, bool)):
        raise ManifestError(f"unsupported schemaVersion {version!r} (want 2)")
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
    """This machine as an image platform: x86_64 -> linux/amd64, aarch64 -> linux/arm64,
    armv7l -> linux/arm/v7 (from platform.machine())."""
    machine = _platform.machine()
    return Platform("linux", _ARCH.get(machine, machine), _ARM_VARIANT.get(machine, ""))


def _normal_variant(arch: str, variant: str) -> str:
    # The defaults image builders leave out: arm64 is v8, 32-bit arm is v7, plain amd64 is v1.
    if not variant:
        return {"arm64": "v8", "arm": "v7", "amd64": "v1"}.get(arch, "")
    return variant


def _acceptable_variants(arch: str, variant: str) -> list[str]:
    """Variants a ``arch``/``variant`` host runs, best first: the exact one, then the older
    revisions of the same ISA that it executes (an arm v7 CPU runs v6 and v5 code; an amd64 v3
    CPU runs v2 and v1 code). Unknown schemes match exactly."""
    v = _normal_variant(arch, variant)
    ladders = {"arm": ["v8", "v7", "v6", "v5"], "amd64": ["v4", "v3", "v2", "v1"]}
    ladder = ladders.get(arch)
    if ladder and v in ladder:
        return ladder[ladder.index(v):]
    return [v]


def _describe(p: Platform) -> str:
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def select_platform(index: Index, want: Platform | None = None, *, os: str | None = None,
                    arch: str | None = None, variant: str | None = None) -> Descriptor:
    """The index entry to run on ``want`` (default: this host, see host_platform), whose fields
    ``os`` / ``arch`` / ``variant`` override one by one.

    Variants: a missing one means the default (arm64 v8, arm v7, amd64 v1); the exact variant
    wins, then the older ones the CPU also runs (arm v7 host: v7, v6, v5; never v8). Asking for
    a platform the index lacks is an error listing what the index has.
    """
    base = want or host_platform()
    target = Platform(os if os is not None else base.os,
                      arch if arch is not None else base.architecture,
                      variant if variant is not None else base.variant)
    order = _acceptable_variants(target.architecture, target.variant)
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    for i, d in enumerate(index.manifests):
        p = d.platform
        if p is None or p.os != target.os or p.architecture != target.architecture:
            continue
        v = _normal_variant(p.architecture, p.variant)
        if v not in order:
            continue
        rank = (order.index(v), i)  # best variant, then index order
        if best is None or rank < best:
            best, chosen = rank, d
    if chosen is not None:
        return chosen
    have = ", ".join(_describe(d.platform) for d in index.manifests
                     if d.platform is not None and d.platform.os != "unknown") or "none"
    raise ManifestError(f"no image for {_describe(target)} in the index (it has: {have})")


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
        return _strings(cfg.get(key), f"image config: config.{key}")

    def text(value: Any, what: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ManifestError(f"image config: {what} must be a string")
        return value

    return ImageConfig(
        user=text(cfg.get("User"), "config.User"),
        env=strings("Env"),
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        working_dir=text(cfg.get("WorkingDir"), "config.WorkingDir"),
        stop_signal=text(cfg.get("StopSignal"), "config.StopSignal"),
        labels=_string_map(cfg.get("Labels"), "image config: config.Labels"),
        diff_ids=tuple(check_digest(d) for d in diff_ids),
        created=text(data.get("created"), "created"),
        architecture=text(data.get("architecture"), "architecture"),
        os=text(data.get("os"), "os"),
    )


def _check_id(value: str, what: str) -> int | None:
    if not _UINT.fullmatch(value):
        return None
    number = int(value)
    if number > UID_MAX:
        raise ManifestError(f"image user: {what} {value} is above the largest {what} {UID_MAX}")
    return number


def uid_username(user: str) -> tuple[int | None, str]:
    """ImageStatus's uid / username from a config User ("user[:group]"): "1002" -> (1002, ""),
    "www-data" -> (None, "www-data"), "1003:1004" -> (1003, ""), "" -> (None, "").

    A numeric uid or gid that does not fit uid_t (or is (uid_t)-1, 4294967295) is an error,
    never wrapped around to root (CVE-2024-40635). Only ASCII digits make a number.
    """
    name, _, group = user.partition(":")
    if group:
        _check_id(group, "gid")
    if not name:
        return None, ""
    uid = _check_id(name, "uid")
    return (uid, "") if uid is not None else (None, name)
