"""The on-disk result cache, laid out like libcni's so DEL/CHECK can find what ADD did:
<cache_dir>/results/<network>-<container id>-<ifname>, a JSON object of kind cniCacheV1."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.errors import CNIError

KIND = "cniCacheV1"
_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_BAD_IFNAME = re.compile(r"[/:\s]")


def check_container_id(container_id: str) -> None:
    if not _ID_RE.match(container_id or ""):
        raise CNIError(f"invalid container id {container_id!r}: must be alphanumeric, '_', '.', '-'")


def check_ifname(ifname: str) -> None:
    if not ifname or len(ifname) > 15 or ifname in (".", "..") or _BAD_IFNAME.search(ifname):
        raise CNIError(f"invalid interface name {ifname!r}")


def entry_path(cache_dir: Path, network: str, container_id: str, ifname: str) -> Path:
    check_container_id(container_id)
    check_ifname(ifname)
    return Path(cache_dir) / "results" / f"{network}-{container_id}-{ifname}"


@dataclass(frozen=True)
class CacheEntry:
    container_id: str
    ifname: str
    network_name: str
    config: bytes
    cni_args: list[tuple[str, str]]
    capability_args: dict[str, Any]
    result: dict[str, Any] | None
    netns: str = ""

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "kind": KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode(),
            "ifName": self.ifname,
            "networkName": self.network_name,
            "netns": self.netns,
            "cniArgs": [list(p) for p in self.cni_args],
            "capabilityArgs": self.capability_args,
        }
        if self.result is not None:
            obj["result"] = self.result
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> CacheEntry:
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise CNIError("not a cniCacheV1 entry")
        try:
            config = base64.b64decode(obj["config"], validate=True)
            args = [(str(k), str(v)) for k, v in obj.get("cniArgs") or []]
        except (KeyError, ValueError, TypeError) as exc:
            raise CNIError(f"corrupt cache entry: {exc}") from exc
        result = obj.get("result")
        caps = obj.get("capabilityArgs")
        return cls(container_id=str(obj.get("containerId", "")), ifname=str(obj.get("ifName", "")),
                   network_name=str(obj.get("networkName", "")), config=config, cni_args=args,
                   capability_args=caps if isinstance(caps, dict) else {},
                   result=result if isinstance(result, dict) else None,
                   netns=str(obj.get("netns") or ""))


def _ensure_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


def write_entry(cache_dir: Path, entry: CacheEntry) -> Path:
    """Atomically (tmp + fsync + rename) store entry with mode 0600 in a 0700 directory."""
    path = entry_path(cache_dir, entry.network_name, entry.container_id, entry.ifname)
    _ensure_dir(Path(cache_dir))
    _ensure_dir(path.parent)
    data = json.dumps(entry.to_json(), separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def read_entry(cache_dir: Path, network: str, container_id: str, ifname: str) -> CacheEntry | None:
    """The entry, or None when it is absent or unreadable/corrupt."""
    path = entry_path(cache_dir, network, container_id, ifname)
    try:
        obj = json.loads(path.read_bytes())
        return CacheEntry.from_json(obj)
    except (OSError, ValueError, CNIError):
        return None


def find_entry(cache_dir: Path, container_id: str, ifname: str) -> CacheEntry | None:
    """Any network's entry for (container_id, ifname), for when the network name is unknown."""
    check_container_id(container_id)
    check_ifname(ifname)
    suffix = f"-{container_id}-{ifname}"
    results = Path(cache_dir) / "results"
    try:
        names = sorted(n for n in os.listdir(results) if n.endswith(suffix) and not n.startswith("."))
    except OSError:
        return None
    for name in names:
        try:
            entry = CacheEntry.from_json(json.loads((results / name).read_bytes()))
        except (OSError, ValueError, CNIError):
            continue
        if entry.container_id == container_id and entry.ifname == ifname \
                and f"{entry.network_name}{suffix}" == name:
            return entry
    return None


def remove_entry(cache_dir: Path, network: str, container_id: str, ifname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(entry_path(cache_dir, network, container_id, ifname))


def args_pairs(args: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in args.items()]
