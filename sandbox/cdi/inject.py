"""CDI edits into an OCI spec, in two steps: ``realize`` turns the resolved devices into OCI
entries (reading the host's device nodes for what a spec leaves out), and may fail naming the
device; ``apply`` then edits the spec dict and cannot fail, so a container either gets every
requested device or the request is refused before anything is made.

What ``apply`` does to the spec, as the CDI spec and its reference implementation say:
environment entries replace one of the same name or are appended; a device node replaces one
at the same path in ``linux.devices`` and adds an allow rule to ``linux.resources.devices``;
a mount replaces one at the same destination; hooks are appended to their stage's list (never
replacing what is there: OCI hooks from hooks directories share those lists); additional gids
are added to the process user's.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.cdi.registry import Resolved
from sandbox.cdi.spec import NO_PERMISSIONS, DeviceNode, Edits
from sandbox.oci.spec import sort_mounts

Spec = dict[str, Any]


class DeviceNodeError(ValueError):
    """A device node a CDI device names that the host cannot provide."""


@dataclass(frozen=True)
class Injection:
    names: tuple[str, ...]  # the qualified device names, for the log
    env: tuple[str, ...] = ()
    devices: tuple[tuple[Spec, str | None], ...] = ()  # linux.devices entry, cgroup access
    mounts: tuple[Spec, ...] = ()
    hooks: tuple[tuple[str, Spec], ...] = ()  # (stage, OCI hook)
    additional_gids: tuple[int, ...] = ()


def realize(resolved: Sequence[Resolved]) -> Injection:
    """The OCI entries of ``resolved``: each spec's own edits once, before its devices'."""
    env: list[str] = []
    devices: list[tuple[Spec, str | None]] = []
    mounts: list[Spec] = []
    hooks: list[tuple[str, Spec]] = []
    gids: list[int] = []
    seen_specs: set[str] = set()

    def add(edits: Edits, name: str) -> None:
        env.extend(edits.env)
        for node in edits.device_nodes:
            try:
                devices.append(_device(node))
            except DeviceNodeError as exc:
                raise DeviceNodeError(f"CDI device {name}: {exc}") from None
        mounts.extend(_mount(m.host_path, m.container_path, m.options, m.type)
                      for m in edits.mounts)
        hooks.extend((h.stage, _hook(h.path, h.args, h.env, h.timeout)) for h in edits.hooks)
        gids.extend(edits.additional_gids)

    for r in resolved:
        if r.spec.path not in seen_specs:
            seen_specs.add(r.spec.path)
            add(r.spec.edits, r.name)
        add(r.edits, r.name)
    return Injection(names=tuple(r.name for r in resolved), env=tuple(env),
                     devices=tuple(devices), mounts=tuple(mounts), hooks=tuple(hooks),
                     additional_gids=tuple(gids))


def _device(node: DeviceNode) -> tuple[Spec, str | None]:
    kind, major, minor, mode = node.type, node.major, node.minor, node.file_mode
    # Fully described (a type, and numbers unless a FIFO): the host node may be absent.
    described = kind == "p" or (kind != "" and major is not None)
    try:
        st = os.stat(node.host_path)
    except OSError as exc:
        if not described:
            raise DeviceNodeError(f"host device {node.host_path}: {exc.strerror}") from None
    else:
        host_kind = _kind(st.st_mode)
        if host_kind is None:
            if not described:
                raise DeviceNodeError(f"host path {node.host_path} is not a device node")
        else:
            if mode is None:
                mode = stat.S_IMODE(st.st_mode)
            if not described:
                if kind not in ("", host_kind) and not (kind == "u" and host_kind == "c"):
                    raise DeviceNodeError(f"{node.path}: type {kind} but host device "
                                          f"{node.host_path} is of type {host_kind}")
                kind = kind or host_kind
                if kind != "p" and major is None:
                    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    entry: Spec = {"path": node.path, "type": kind}
    if kind != "p":
        entry["major"] = major
        entry["minor"] = minor or 0
    for key, value in (("fileMode", mode), ("uid", node.uid), ("gid", node.gid)):
        if value is not None:
            entry[key] = value
    access: str | None = None
    if kind != "p" and node.permissions != NO_PERMISSIONS:
        access = node.permissions or "rwm"
    return entry, access


def _kind(mode: int) -> str | None:
    if stat.S_ISCHR(mode):
        return "c"
    if stat.S_ISBLK(mode):
        return "b"
    if stat.S_ISFIFO(mode):
        return "p"
    return None


def _mount(source: str, destination: str, options: Sequence[str], type_: str) -> Spec:
    m: Spec = {"destination": destination, "source": source, "options": list(options)}
    if type_:
        m["type"] = type_
    return m


def _hook(path: str, args: Sequence[str], env: Sequence[str], timeout: int | None) -> Spec:
    hook: Spec = {"path": path}
    if args:
        hook["args"] = list(args)
    if env:
        hook["env"] = list(env)
    if timeout is not None:
        hook["timeout"] = timeout
    return hook


def apply(spec: Spec, inj: Injection) -> None:
    """Edit ``spec`` in place with ``inj``."""
    process = spec.setdefault("process", {})
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    if inj.env:
        env: dict[str, str] = {}
        for item in [*process.get("env", []), *inj.env]:
            name, _, _ = item.partition("=")
            env[name] = item  # a later entry of a name replaces the earlier, in its place
        process["env"] = list(env.values())
    linux = spec.setdefault("linux", {})
    for entry, access in inj.devices:
        entry = dict(entry)
        # A node without an owner of its own belongs to the container's user, as in the
        # reference implementation (root is the default anyway).
        for key in ("uid", "gid"):
            if key not in entry and user.get(key, 0) > 0:
                entry[key] = user[key]
        linux["devices"] = [d for d in linux.get("devices", []) if d["path"] != entry["path"]]
        linux["devices"].append(entry)
        if access is not None:
            rule_type = "c" if entry["type"] == "u" else entry["type"]
            linux.setdefault("resources", {}).setdefault("devices", []).append(
                {"allow": True, "type": rule_type, "major": entry["major"],
                 "minor": entry["minor"], "access": access})
    if inj.mounts:
        mounts = list(spec.get("mounts", []))
        for m in inj.mounts:
            dest = posixpath.normpath(m["destination"])
            mounts = [x for x in mounts if posixpath.normpath(x["destination"]) != dest]
            mounts.append(dict(m))
        spec["mounts"] = sort_mounts(mounts)
    if inj.hooks:
        hooks = spec.setdefault("hooks", {})
        for stage, hook in inj.hooks:
            hooks.setdefault(stage, []).append(dict(hook))
    for gid in inj.additional_gids:
        gids = user.setdefault("additionalGids", [])
        if gid not in gids:
            gids.append(gid)
