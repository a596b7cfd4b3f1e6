"""Seccomp profiles as OCI ``linux.seccomp`` objects: RuntimeDefault and Localhost.

Both kinds start as documents in the docker/moby profile format, the format kubelet users
write Localhost profiles in (critest writes one too): rules with ``name`` or ``names``, and
optional ``includes``/``excludes`` conditions on the container's capabilities, the node's
architecture and its kernel version, plus ``archMap`` to pick the architectures of this node.
runc understands none of those conditions, so they are resolved here, per container, into
the plain OCI form (runtime-spec config-linux.md "Seccomp").

The RuntimeDefault document is ``seccomp_default.json`` next to this module.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import platform
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from sandbox.errors import SandboxError

Profile = dict[str, Any]

# A profile is a few hundred rules at most; anything much larger is a mistake or an attempt to
# make the daemon parse (and keep) something huge.
MAX_PROFILE_BYTES = 1 << 20

ACTIONS = frozenset({
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
})
OPERATORS = frozenset({
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})
_MAX_ARG_INDEX = 5  # a syscall has six argument registers
_MAX_ERRNO = 4095  # the kernel clamps larger SECCOMP_RET_ERRNO data to this
_U64_LIMIT = 1 << 64

# uname -m -> (Go's GOARCH, libseccomp's architecture). Profiles in the docker format name
# architectures in includes/excludes the Go way, and archMap entries the libseccomp way.
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

_DEFAULT_PROFILE = "seccomp_default.json"


class SeccompError(SandboxError, ValueError):
    """A seccomp profile cannot be read or does not describe a valid filter."""


@dataclass(frozen=True)
class _Node:
    """What includes/excludes conditions are evaluated against."""

    arch_names: frozenset[str]  # the Go name and the uname name of the machine
    seccomp_arch: str | None  # None: a machine the table does not know; no archMap entry fits
    kernel: tuple[int, int]


def _node(machine: str | None) -> _Node:
    machine = machine or platform.machine()
    go_arch, seccomp_arch = _MACHINES.get(machine, (machine, None))
    release = os.uname().release
    try:
        kernel = _version(release)
    except ValueError:
        kernel = (0, 0)  # an unparsable release satisfies no minKernel
    return _Node(frozenset({go_arch, machine}), seccomp_arch, kernel)


def _version(text: str) -> tuple[int, int]:
    """``"6.1.0-18-amd64"`` or ``"4.8"`` -> (major, minor)."""
    parts = text.split("-", 1)[0].split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise ValueError(f"not a kernel version: {text!r}")
    return int(parts[0]), int(parts[1])


def _cap_name(name: str) -> str:
    # Lenient on purpose: a profile may name a capability this table does not know yet; it
    # simply never matches rather than making the profile unusable.
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def default_profile(capabilities: Collection[str], *, arch: str | None = None) -> Profile:
    """The RuntimeDefault profile for a container holding ``capabilities``.

    ``capabilities`` are the container's capability names, with or without the ``CAP_``
    prefix; rules meant for a capability apply only when it is granted (docker and CRI-O do
    the same), so granting CAP_SYS_ADMIN also lets through mount, unshare, sethostname, ...
    ``arch`` is a ``uname -m`` value, the node's own by default. Every call returns new
    objects, so the caller may change the result.
    """
    return _resolve(_default_document(), capabilities, _node(arch), f"built-in {_DEFAULT_PROFILE}")


@functools.cache
def _default_document() -> Mapping[str, Any]:
    text = importlib.resources.files(__package__ or "sandbox.oci").joinpath(_DEFAULT_PROFILE)
    document: Mapping[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return document


def load_localhost_profile(
    path: Path, capabilities: Collection[str], *, arch: str | None = None
) -> Profile:
    """Read a Localhost profile (docker/moby format) and resolve it into the OCI form.

    ``path`` is the CRI ``localhost_ref``: an absolute path on the node. Any problem -
    a relative path, no file, not a regular file, over 1 MiB, not JSON, not an object, a
    field of the wrong type, an unknown action or operator - raises :class:`SeccompError`
    naming the path. ``capabilities`` and ``arch`` are as for :func:`default_profile`.
    """
    if not path.is_absolute():
        raise SeccompError(f"seccomp profile {path}: a localhost profile path must be absolute")
    data = _read_capped(path)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise SeccompError(f"seccomp profile {path} is not valid JSON: {exc}") from exc
    return _resolve(document, capabilities, _node(arch), f"seccomp profile {path}")


def _read_capped(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the daemon in open().
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise SeccompError(f"seccomp profile {path} does not exist") from exc
    except OSError as exc:
        raise SeccompError(f"cannot open seccomp profile {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SeccompError(f"seccomp profile {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_PROFILE_BYTES + 1)
        except OSError as exc:
            raise SeccompError(f"cannot read seccomp profile {path}: {exc.strerror}") from exc
    if len(data) > MAX_PROFILE_BYTES:
        raise SeccompError(f"seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
    return data


# --- docker format -> OCI ------------------------------------------------------------------


def _resolve(document: object, capabilities: Collection[str], node: _Node, source: str) -> Profile:
    if not isinstance(document, dict):
        raise SeccompError(f"{source}: the profile must be a JSON object")
    caps = frozenset(_cap_name(c) for c in capabilities)
    profile: Profile = {"defaultAction": _action(document.get("defaultAction"), source, "defaultAction")}
    if document.get("defaultErrnoRet") is not None:
        profile["defaultErrnoRet"] = _errno(document["defaultErrnoRet"], source, "defaultErrnoRet")
    architectures = _architectures(document, node, source)
    if architectures:  # none: runc filters the native architecture only
        profile["architectures"] = architectures
    if document.get("flags") is not None:
        profile["flags"] = _strings(document["flags"], source, "flags")
    for key in ("listenerPath", "listenerMetadata"):
        value = document.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise SeccompError(f"{source}: {key} must be a string")
            if value:
                profile[key] = value
    rules = document.get("syscalls")
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise SeccompError(f"{source}: syscalls must be a list")
    profile["syscalls"] = [
        _rule(rule, source, f"syscalls[{i}]")
        for i, rule in enumerate(rules)
        if _applies(rule, caps, node, source, f"syscalls[{i}]")
    ]
    return profile


def _architectures(document: Mapping[str, Any], node: _Node, source: str) -> list[str]:
    explicit = document.get("architectures")
    arch_map = document.get("archMap")
    if explicit and arch_map:
        raise SeccompError(f"{source}: use either architectures or archMap, not both")
    if explicit:
        arches = _strings(explicit, source, "architectures")
        for arch in arches:
            if not arch.startswith("SCMP_ARCH_"):
                raise SeccompError(f"{source}: unknown architecture {arch!r}")
        return arches
    if not arch_map:
        return []
    if not isinstance(arch_map, list):
        raise SeccompError(f"{source}: archMap must be a list")
    # Only this node's entry counts: its native architecture plus the ones its kernel can
    # also run (x86 and x32 binaries on x86_64), which the filter must cover too or a 32-bit
    # syscall would sidestep it.
    result: list[str] = []
    for i, entry in enumerate(arch_map):
        where = f"archMap[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            raise SeccompError(f"{source}: {where} needs an architecture")
        if entry["architecture"] != node.seccomp_arch:
            continue
        sub = entry.get("subArchitectures")
        result.append(entry["architecture"])
        if sub is not None:
            result.extend(_strings(sub, source, f"{where}.subArchitectures"))
    return result


def _applies(rule: object, caps: frozenset[str], node: _Node, source: str, where: str) -> bool:
    if not isinstance(rule, dict):
        raise SeccompError(f"{source}: {where} must be an object")
    includes = _condition(rule.get("includes"), source, f"{where}.includes")
    excludes = _condition(rule.get("excludes"), source, f"{where}.excludes")
    # includes: every listed capability is needed; any listed architecture will do.
    if includes.caps and not includes.caps <= caps:
        return False
    if includes.arches and not includes.arches & node.arch_names:
        return False
    if includes.min_kernel and node.kernel < includes.min_kernel:
        return False
    # excludes: any one match drops the rule.
    if excludes.caps & caps or excludes.arches & node.arch_names:
        return False
    return not (excludes.min_kernel and node.kernel >= excludes.min_kernel)


@dataclass(frozen=True)
class _Condition:
    caps: frozenset[str] = frozenset()
    arches: frozenset[str] = frozenset()
    min_kernel: tuple[int, int] | None = None


def _condition(value: object, source: str, where: str) -> _Condition:
    if value is None:
        return _Condition()
    if not isinstance(value, dict):
        raise SeccompError(f"{source}: {where} must be an object")
    caps = _strings(value.get("caps") or [], source, f"{where}.caps")
    arches = _strings(value.get("arches") or [], source, f"{where}.arches")
    min_kernel = None
    if value.get("minKernel"):
        text = value["minKernel"]
        try:
            if not isinstance(text, str):
                raise ValueError(text)
            min_kernel = _version(text)
        except ValueError as exc:
            raise SeccompError(f"{source}: {where}.minKernel must look like \"4.8\"") from exc
    return _Condition(frozenset(_cap_name(c) for c in caps), frozenset(arches), min_kernel)


def _rule(rule: Mapping[str, Any], source: str, where: str) -> Profile:
    name, names = rule.get("name"), rule.get("names")
    if name and names:
        raise SeccompError(f"{source}: {where} has both name and names; use one")
    if name:
        if not isinstance(name, str):
            raise SeccompError(f"{source}: {where}.name must be a string")
        names = [name]
    names = _strings(names or [], source, f"{where}.names")
    if not names or not all(names):
        raise SeccompError(f"{source}: {where} names no syscall")
    out: Profile = {"names": names, "action": _action(rule.get("action"), source, f"{where}.action")}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = _errno(rule["errnoRet"], source, f"{where}.errnoRet")
    args = rule.get("args")
    if args:
        if not isinstance(args, list):
            raise SeccompError(f"{source}: {where}.args must be a list")
        out["args"] = [_arg(arg, source, f"{where}.args[{i}]") for i, arg in enumerate(args)]
    return out


def _arg(arg: object, source: str, where: str) -> Profile:
    if not isinstance(arg, dict):
        raise SeccompError(f"{source}: {where} must be an object")
    index = arg.get("index", 0)
    if not _is_int(index) or not 0 <= index <= _MAX_ARG_INDEX:
        raise SeccompError(f"{source}: {where}.index must be 0-{_MAX_ARG_INDEX}")
    values = []
    for key in ("value", "valueTwo"):
        value = arg.get(key, 0)
        if not _is_int(value) or not 0 <= value < _U64_LIMIT:
            raise SeccompError(f"{source}: {where}.{key} must be an unsigned 64-bit integer")
        values.append(value)
    op = arg.get("op")
    if op not in OPERATORS:
        raise SeccompError(f"{source}: {where}.op: unknown operator {op!r}")
    return {"index": index, "value": values[0], "valueTwo": values[1], "op": op}


def _action(value: object, source: str, where: str) -> str:
    if not isinstance(value, str) or value not in ACTIONS:
        raise SeccompError(f"{source}: {where}: unknown action {value!r}")
    return value


def _errno(value: object, source: str, where: str) -> int:
    if not _is_int(value) or not 0 <= value <= _MAX_ERRNO:
        raise SeccompError(f"{source}: {where} must be an errno number (0-{_MAX_ERRNO})")
    return value


def _strings(value: object, source: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SeccompError(f"{source}: {where} must be a list of strings")
    return list(value)


def _is_int(value: object) -> TypeGuard[int]:
    # JSON true/false arrive as bool, a subclass of int; neither is a number here.
    return isinstance(value, int) and not isinstance(value, bool)
