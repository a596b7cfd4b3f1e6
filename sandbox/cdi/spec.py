"""One CDI spec file (JSON or YAML) read into typed, validated values.

A spec names its ``kind`` (``vendor/class``), its ``devices`` (each a name and the
``containerEdits`` a container requesting it gets) and optionally ``containerEdits`` of its own,
applied once to a container that requests any of its devices. Keys this reader does not know
are refused, as the reference implementation's strict decoding does: an edit a vendor wrote and
pycri left out would give the container a device that does not work. ``intelRdt`` and
``netDevices`` are known and refused too (no runc pycri drives applies them the CDI way).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandbox.cdi.names import InvalidName, check_device_name, parse_kind

# Every released cdiVersion; a newer one may carry edits this reader cannot know of.
VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
            "1.1.0")
HOOK_STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
               "poststop")
DEVICE_TYPES = ("", "b", "c", "u", "p")
NO_PERMISSIONS = "none"  # the spec's word for a device node the container may not open
MAX_SPEC_BYTES = 4 << 20  # a vendor's spec is a few KiB; anything this large is not one


class SpecError(ValueError):
    """A spec file that cannot be used; ``kind`` is its kind when it could be read."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DeviceNode:
    path: str  # in the container
    host_path: str
    type: str  # "" (from the host node), b, c, u or p
    major: int | None
    minor: int | None
    file_mode: int | None
    permissions: str  # cgroup access: a subset of "rwm", "" for rwm, "none" for nothing
    uid: int | None
    gid: int | None


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    options: tuple[str, ...]
    type: str


@dataclass(frozen=True)
class Hook:
    stage: str  # the OCI hook list it joins (CDI's hookName)
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: int | None


@dataclass(frozen=True)
class Edits:
    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    hooks: tuple[Hook, ...] = ()
    additional_gids: tuple[int, ...] = ()

    def empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks
                    or self.additional_gids)


@dataclass(frozen=True)
class Spec:
    path: str
    kind: str
    devices: dict[str, Edits]  # by device name (unqualified)
    edits: Edits  # the spec-wide edits


def load(path: Path) -> Spec:
    """Read and validate the spec at ``path`` (``.json`` as JSON, anything else as YAML)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES} bytes")
    try:
        doc = json.loads(data) if path.suffix == ".json" else yaml.safe_load(data)
    except (ValueError, yaml.YAMLError) as exc:  # JSON and Unicode errors are ValueErrors
        raise SpecError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    return parse(doc, str(path))


def parse(doc: Any, path: str) -> Spec:
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a CDI spec is a mapping (cdiVersion, kind, devices)")
    kind = doc.get("kind")
    known_kind = kind if isinstance(kind, str) else None
    try:
        return _parse(doc, path)
    except (_Invalid, InvalidName) as exc:
        raise SpecError(f"{path}: {exc}", known_kind) from None


class _Invalid(ValueError):
    pass


def _parse(doc: dict[str, Any], path: str) -> Spec:
    _keys(doc, "spec", {"cdiVersion", "kind", "annotations", "devices", "containerEdits"})
    version = _str(doc, "cdiVersion", "spec", required=True).removeprefix("v")
    if version not in VERSIONS:
        raise _Invalid(f"cdiVersion {version!r} is not one pycri knows ({', '.join(VERSIONS)})")
    kind = _str(doc, "kind", "spec", required=True)
    parse_kind(kind)
    _annotations(doc, "spec")
    raw_devices = doc.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise _Invalid("devices: a spec lists at least one device")
    devices: dict[str, Edits] = {}
    for i, raw in enumerate(raw_devices):
        where = f"devices[{i}]"
        if not isinstance(raw, dict):
            raise _Invalid(f"{where}: not a mapping")
        _keys(raw, where, {"name", "annotations", "containerEdits"})
        name = _str(raw, "name", where, required=True)
        check_device_name(name)
        where = f"device {name!r}"
        if name in devices:
            raise _Invalid(f"{where} is listed twice")
        _annotations(raw, where)
        edits = _edits(raw.get("containerEdits"), where)
        if edits.empty():
            raise _Invalid(f"{where} has no containerEdits")
        devices[name] = edits
    return Spec(path=path, kind=kind, devices=devices,
                edits=_edits(doc.get("containerEdits"), "containerEdits"))


def _edits(raw: Any, where: str) -> Edits:
    if raw is None:
        return Edits()
    if not isinstance(raw, dict):
        raise _Invalid(f"{where}: containerEdits is not a mapping")
    for unsupported in ("intelRdt", "netDevices"):
        if raw.get(unsupported):
            raise _Invalid(f"{where}: {unsupported} edits are not supported by pycri")
    _keys(raw, where, {"env", "deviceNodes", "mounts", "hooks", "additionalGids", "intelRdt",
                       "netDevices"})
    gids = _list(raw, "additionalGids", where)
    if not all(_is_int(g) and 0 <= g < 1 << 32 for g in gids):
        raise _Invalid(f"{where}: additionalGids are group ids (0..2^32-1)")
    return Edits(
        env=_env(raw, where),
        device_nodes=tuple(_device_node(d, f"{where}: deviceNodes[{i}]")
                           for i, d in enumerate(_list(raw, "deviceNodes", where))),
        mounts=tuple(_mount(m, f"{where}: mounts[{i}]")
                     for i, m in enumerate(_list(raw, "mounts", where))),
        hooks=tuple(_hook(h, f"{where}: hooks[{i}]")
                    for i, h in enumerate(_list(raw, "hooks", where))),
        additional_gids=tuple(g for g in gids if g != 0),  # the spec: a 0 is ignored
    )


def _device_node(raw: Any, where: str) -> DeviceNode:
    raw = _mapping(raw, where)
    _keys(raw, where, {"path", "hostPath", "type", "major", "minor", "fileMode", "permissions",
                       "uid", "gid"})
    path = _abs(raw, "path", where, required=True)
    kind = _str(raw, "type", where)
    if kind not in DEVICE_TYPES:
        raise _Invalid(f"{where}: type {kind!r} is none of b, c, u, p")
    perms = _str(raw, "permissions", where)
    if perms != NO_PERMISSIONS and not set(perms) <= set("rwm"):
        raise _Invalid(f"{where}: permissions {perms!r} are neither a subset of rwm nor none")
    return DeviceNode(
        path=path, host_path=_abs(raw, "hostPath", where) or path, type=kind,
        major=_int(raw, "major", where), minor=_int(raw, "minor", where),
        file_mode=_int(raw, "fileMode", where), permissions=perms,
        uid=_int(raw, "uid", where), gid=_int(raw, "gid", where))


def _mount(raw: Any, where: str) -> Mount:
    raw = _mapping(raw, where)
    _keys(raw, where, {"hostPath", "containerPath", "options", "type"})
    options = _list(raw, "options", where)
    if not all(isinstance(o, str) for o in options):
        raise _Invalid(f"{where}: options are strings")
    return Mount(host_path=_str(raw, "hostPath", where, required=True),
                 container_path=_abs(raw, "containerPath", where, required=True),
                 options=tuple(options), type=_str(raw, "type", where))


def _hook(raw: Any, where: str) -> Hook:
    raw = _mapping(raw, where)
    _keys(raw, where, {"hookName", "path", "args", "env", "timeout"})
    stage = _str(raw, "hookName", where, required=True)
    if stage not in HOOK_STAGES:
        raise _Invalid(f"{where}: hookName {stage!r} is none of {', '.join(HOOK_STAGES)}")
    args = _list(raw, "args", where)
    if not all(isinstance(a, str) for a in args):
        raise _Invalid(f"{where}: args are strings")
    timeout = _int(raw, "timeout", where)
    if timeout is not None and timeout <= 0:
        raise _Invalid(f"{where}: timeout must be greater than zero")
    return Hook(stage=stage, path=_abs(raw, "path", where, required=True), args=tuple(args),
                env=_env(raw, where), timeout=timeout)


# --- typed field access ----------------------------------------------------------------------


def _keys(raw: dict[str, Any], where: str, known: set[str]) -> None:
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise _Invalid(f"{where}: unknown field(s) {', '.join(unknown)}")


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Invalid(f"{where}: not a mapping")
    return raw


def _str(raw: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise _Invalid(f"{where}: {key} is required")
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise _Invalid(f"{where}: {key} is not a string")
    return value


def _abs(raw: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = _str(raw, key, where, required)
    if value and not os.path.isabs(value):
        raise _Invalid(f"{where}: {key} {value!r} is not an absolute path")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(raw: dict[str, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise _Invalid(f"{where}: {key} is not a non-negative integer")
    return int(value)


def _list(raw: dict[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{where}: {key} is not a list")
    return value


def _env(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    env = _list(raw, "env", where)
    for item in env:
        if not isinstance(item, str) or item.find("=") <= 0 or "\x00" in item:
            raise _Invalid(f"{where}: env entry {item!r} is not NAME=value")
    return tuple(env)


def _annotations(raw: dict[str, Any], where: str) -> None:
    value = raw.get("annotations")
    if value is not None and not (isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise _Invalid(f"{where}: annotations map strings to strings")
