"""Loading CNI network configurations from a conf dir, the way libcni / CRI-O choose one.

Files ending in .conflist, .conf or .json are considered in lexical name order (libcni's
ConfFiles + sort) and the first valid one wins. A single-plugin file (a plugin object with a
"type" instead of a "plugins" list) is wrapped into a list carrying its name and cniVersion, as
libcni's ConfListFromConf does. Invalid files are skipped, each with a reason, so a runtime can
say why the network is not ready.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.errors import CNIConfigError, CNIPluginNotFound
from cni.invoke import find_plugin

EXTENSIONS = (".conflist", ".conf", ".json")
MAX_CONFIG_BYTES = 1 << 20
# Spec versions this package can drive (their results are all parsed by cni.result).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Network names and plugin types end up in file names (cache entries, plugin paths): the
# characters libcni's ValidateNetworkName allows.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    source: Path
    raw: dict[str, Any]
    # The conflist as bytes (for a wrapped .conf: the synthesised list), stored in the cache.
    data: bytes = field(repr=False, default=b"")
    disable_check: bool = False


@dataclass
class Loaded:
    config: NetworkConfigList | None
    reasons: list[str] = field(default_factory=list)

    def why_not(self, conf_dir: Path) -> str:
        """A one-line reason for a runtime status ("no valid CNI config in <dir>: ...")."""
        detail = "; ".join(self.reasons) or "no .conflist, .conf or .json file"
        return f"no valid CNI network config in {conf_dir}: {detail}"


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def _read_bool(obj: dict[str, Any], key: str) -> bool:
    # libcni accepts a JSON boolean or the strings "true"/"false" (any case).
    value = obj.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIConfigError(f"{key!r} must be a boolean, not {value!r}")


def _pick_version(obj: dict[str, Any]) -> str:
    """cniVersion, or with spec 1.1.0's "cniVersions" the highest version both sides know."""
    version = obj.get("cniVersion")
    if version is not None and (not isinstance(version, str) or not _VERSION_RE.match(version)):
        raise CNIConfigError(f"invalid 'cniVersion' {version!r}")
    versions = obj.get("cniVersions")
    if versions is not None:
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise CNIConfigError("'cniVersions' must be a list of strings")
        usable = [v for v in [*versions, version] if v in SUPPORTED_VERSIONS]
        if usable:
            version = max(usable, key=version_tuple)
    if not version:
        raise CNIConfigError("missing 'cniVersion'")
    if version not in SUPPORTED_VERSIONS:
        raise CNIConfigError(f"unsupported cniVersion {version!r} (known: {', '.join(SUPPORTED_VERSIONS)})")
    return version


def _check_plugin(i: int, plugin: Any) -> None:
    if not isinstance(plugin, dict):
        raise CNIConfigError(f"plugins[{i}] is not a JSON object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CNIConfigError(f"plugins[{i}] has no 'type'")
    if not _NAME_RE.match(ptype):
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
        obj = {"cniVersion": obj.get("cniVersion"), "name": obj.get("name"), "plugins": [obj]}
        data = json.dumps(obj).encode()
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise CNIConfigError("missing network 'name'")
    if not _NAME_RE.match(name):
        raise CNIConfigError(f"invalid network name {name!r}")
    version = _pick_version(obj)
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CNIConfigError("'plugins' must be a non-empty list")
    for i, plugin in enumerate(plugins):
        _check_plugin(i, plugin)
    return NetworkConfigList(name=name, cni_version=version, plugins=list(plugins), source=source,
                             raw=obj, data=bytes(data), disable_check=_read_bool(obj, "disableCheck"))


def check_plugins_present(config: NetworkConfigList, plugin_dirs: Sequence[Path]) -> None:
    """Every plugin binary (and delegated IPAM plugin) the list names exists in plugin_dirs.

    CRI-O's ocicni skips such configs too: a node whose CNI binaries are not installed yet
    must not report the network ready."""
    for plugin in config.plugins:
        ipam = plugin.get("ipam")
        types = [plugin["type"]]
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            types.append(ipam["type"])
        for ptype in types:
            try:
                find_plugin(ptype, plugin_dirs)
            except CNIPluginNotFound as exc:
                raise CNIConfigError(str(exc)) from None


def _candidates(conf_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(conf_dir) as it:
            # Dot files are skipped: they are editors' and installers' temporary copies.
            entries = [e for e in it if e.name.endswith(EXTENSIONS) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(entries, key=lambda e: e.name)


def _stat_key(path: Path | str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)  # follows symlinks, so a retargeted link counts as a change
    except OSError:
        return (-1, -1, -1)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def fingerprint(conf_dir: Path, plugin_dirs: Sequence[Path] = ()) -> object:
    """Cheap change detector (compare with ==): names, mtimes and sizes of the candidate files,
    plus the plugin dirs' own mtimes when given (a binary appearing makes a config valid)."""
    try:
        entries = _candidates(conf_dir)
    except OSError as exc:
        return ("error", str(exc))
    files = tuple((e.name, *_stat_key(e.path)) for e in entries)
    if not plugin_dirs:
        return files
    return (files, tuple((str(d), *_stat_key(d)) for d in plugin_dirs))


def load_file(path: Path) -> NetworkConfigList:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise CNIConfigError(f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise CNIConfigError(f"larger than {MAX_CONFIG_BYTES} bytes")
    return parse_conflist(data, path)


def load_dir(conf_dir: Path, plugin_dirs: Sequence[Path] | None = None) -> Loaded:
    """The first valid configuration in name order, plus why earlier files were skipped.

    With plugin_dirs, a config naming a plugin binary that is not installed is skipped too."""
    reasons: list[str] = []
    try:
        entries = _candidates(conf_dir)
    except OSError as exc:
        return Loaded(None, [f"{conf_dir}: {exc.strerror or exc}"])
    for entry in entries:
        if not entry.is_file():
            reasons.append(f"{entry.name}: not a regular file")
            continue
        try:
            config = load_file(Path(conf_dir) / entry.name)
            if plugin_dirs is not None:
                check_plugins_present(config, plugin_dirs)
        except CNIConfigError as exc:
            reasons.append(f"{entry.name}: {exc}")
            continue
        return Loaded(config, reasons)
    return Loaded(None, reasons)
