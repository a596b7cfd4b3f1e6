"""Loading CNI network configurations from a conf dir, the way libcni / CRI-O choose one.

Files ending in .conflist, .conf or .json are considered in lexical name order and the first
valid one wins. A single-plugin file (.conf / .json holding a plugin object) is wrapped into a
list carrying its name and cniVersion, as libcni's ConfListFromConf does.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.errors import CNIConfigError

EXTENSIONS = (".conflist", ".conf", ".json")
MAX_CONFIG_BYTES = 1 << 20

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_TYPE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    source: Path
    raw: dict[str, Any]
    # The conflist as bytes (for a wrapped .conf: the synthesised list), stored in the cache.
    data: bytes = field(repr=False, default=b"")

    @property
    def disable_check(self) -> bool:
        return bool(self.raw.get("disableCheck", False))


@dataclass
class Loaded:
    config: NetworkConfigList | None
    reasons: list[str] = field(default_factory=list)


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def _check_plugin(i: int, plugin: Any) -> None:
    if not isinstance(plugin, dict):
        raise CNIConfigError(f"plugins[{i}] is not a JSON object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CNIConfigError(f"plugins[{i}] has no 'type'")
    if not _TYPE_RE.match(ptype):
        raise CNIConfigError(f"plugins[{i}] has an invalid type {ptype!r}")
    caps = plugin.get("capabilities")
    if caps is not None and not isinstance(caps, dict):
        raise CNIConfigError(f"plugins[{i}].capabilities is not an object")


def parse_conflist(data: bytes, source: Path) -> NetworkConfigList:
    """Parse a network configuration list (or a single plugin config, which gets wrapped)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIConfigError(f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CNIConfigError("top level is not a JSON object")
    if "plugins" not in obj:
        if "type" not in obj:
            raise CNIConfigError("neither a 'plugins' list nor a single plugin 'type'")
        # Single plugin config: wrap it like libcni's ConfListFromConf.
        obj = {"cniVersion": obj.get("cniVersion"), "name": obj.get("name"), "plugins": [obj]}
        data = json.dumps(obj).encode()
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise CNIConfigError("missing network 'name'")
    if not _NAME_RE.match(name):
        raise CNIConfigError(f"invalid network name {name!r}")
    version = obj.get("cniVersion")
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise CNIConfigError(f"missing or invalid 'cniVersion' {version!r}")
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIConfigError("'plugins' must be a non-empty list")
    for i, plugin in enumerate(plugins):
        _check_plugin(i, plugin)
    disable_check = obj.get("disableCheck", False)
    if not isinstance(disable_check, bool):
        raise CNIConfigError("'disableCheck' must be a boolean")
    return NetworkConfigList(name=name, cni_version=version, plugins=list(plugins), source=source,
                             raw=obj, data=bytes(data))


def _candidates(conf_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(conf_dir) as it:
            entries = [e for e in it if e.name.endswith(EXTENSIONS) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(entries, key=lambda e: e.name)


def fingerprint(conf_dir: Path) -> object:
    """Cheap change detector: names, mtimes and sizes of the candidate files (== comparable)."""
    items: list[tuple[str, int, int, int]] = []
    try:
        entries = _candidates(conf_dir)
    except OSError as exc:
        return ("error", str(exc))
    for entry in entries:
        try:
            st = entry.stat()  # follows symlinks, so a retargeted link counts as a change
        except OSError:
            items.append((entry.name, -1, -1, -1))
            continue
        items.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(items)


def load_file(path: Path) -> NetworkConfigList:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise CNIConfigError(f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise CNIConfigError(f"larger than {MAX_CONFIG_BYTES} bytes")
    return parse_conflist(data, path)


def load_dir(conf_dir: Path) -> Loaded:
    """The first valid configuration in name order, plus why earlier files were skipped."""
    reasons: list[str] = []
    try:
        entries = _candidates(conf_dir)
    except OSError as exc:
        return Loaded(None, [f"{conf_dir}: {exc}"])
    for entry in entries:
        path = Path(conf_dir) / entry.name
        if not entry.is_file():
            reasons.append(f"{entry.name}: not a regular file")
            continue
        try:
            return Loaded(load_file(path), reasons)
        except CNIConfigError as exc:
            reasons.append(f"{entry.name}: {exc}")
    return Loaded(None, reasons)
