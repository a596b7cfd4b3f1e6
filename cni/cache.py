"""The on-disk result cache, laid out like libcni's so DEL/CHECK can find what ADD did even
after a daemon restart: <cache_dir>/results/<network>-<container id>-<ifname>, one JSON object
of kind "cniCacheV1" (containerId, config as base64 bytes, ifName, networkName, netns,
cniArgs as [key, value] pairs, capabilityArgs, result).

Files are 0600 in 0700 directories: results and capability args describe other pods.
Writes are atomic (temp file + fsync + rename + directory fsync), so a crash leaves either the
old entry or the new one, never a torn file that would lose a DEL its prevResult.
"""

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
    # libcni's ValidateInterfaceName: IFNAMSIZ-1 bytes, no '/', ':' or whitespace, not . or ..
    if not ifname or len(ifname) > 15 or ifname in (".", "..") or _BAD_IFNAME.search(ifname):
        raise CNIError(f"invalid interface name {ifname!r}")


def entry_path(cache_dir: Path, network: str, container_id: str, ifname: str) -> Path:
    if not _ID_RE.match(network or ""):
        raise CNIError(f"invalid network name {network!r}")
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


def _ensure_results_dir(cache_dir: Path) -> Path:
    results = Path(cache_dir) / "results"
    # A cache dir we create is 0700; an existing one (say /var/lib/cni, shared with host-local)
    # keeps its mode. The results dir is ours alone and is forced to 0700.
    Path(cache_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    results.mkdir(mode=0o700, exist_ok=True)
    os.chmod(results, 0o700)
    return results


def write_entry(cache_dir: Path, entry: CacheEntry) -> Path:
    """Atomically (tmp + fsync + rename) store entry with mode 0600 in a 0700 directory."""
    path = entry_path(cache_dir, entry.network_name, entry.container_id, entry.ifname)
    _ensure_results_dir(cache_dir)
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


def list_entries(cache_dir: Path, container_id: str | None = None) -> list[CacheEntry]:
    """Every readable entry (of one container, when given), in file name order: what a runtime
    walks after a restart to DEL attachments whose pods no longer exist."""
    results = Path(cache_dir) / "results"
    try:
        names = sorted(n for n in os.listdir(results) if not n.startswith("."))
    except OSError:
        return []
    entries = []
    for name in names:
        if container_id is not None and f"-{container_id}-" not in name:
            continue
        try:
            entry = CacheEntry.from_json(json.loads((results / name).read_bytes()))
        except (OSError, ValueError, CNIError):
            continue
        # The file name must be the one the entry's own fields give (no stray or renamed files).
        if name != f"{entry.network_name}-{entry.container_id}-{entry.ifname}":
            continue
        if container_id is None or entry.container_id == container_id:
            entries.append(entry)
    return entries


def find_entry(cache_dir: Path, container_id: str, ifname: str) -> CacheEntry | None:
    """Any network's entry for (container_id, ifname), for when the network name is unknown."""
    check_container_id(container_id)
    check_ifname(ifname)
    for entry in list_entries(cache_dir, container_id):
        if entry.ifname == ifname:
            return entry
    return None


def remove_entry(cache_dir: Path, network: str, container_id: str, ifname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(entry_path(cache_dir, network, container_id, ifname))


def args_pairs(args: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in args.items()]
