"""Validation of the sysctls a pod asks for.

Only sysctls that the kernel namespaces may be set for a pod: the IPC ones (they live in the
pod's IPC namespace) and ``net.*`` (the pod's network namespace). Anything else would change the
node for every pod. Each key and value is checked as a whole and never split on separators:
CVE-2022-0811 ("cr8escape") smuggled ``kernel.core_pattern`` into CRI-O through the value
``1024 65000'+'kernel.core_pattern=|/var/lib/...`` because pinns split its argument on ``+`` and
``=``. We refuse the characters such payloads need instead of trusting downstream parsers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sandbox.errors import InvalidSysctl

# The IPC sysctls the kernel keeps per IPC namespace (ipc/ipc_sysctl.c, ipc/mq_sysctl.c). The
# kernel.shm*/msg* families are listed exactly rather than by prefix so a future non-namespaced
# kernel.shm_something is not let through by accident.
_IPC_KEYS = frozenset(
    {
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    }
)
_IPC_PREFIX = "fs.mqueue."
_NET_PREFIX = "net."

# The Kubernetes API's sysctl name format: segments of lowercase alphanumerics with inner '-' or
# '_', separated by '.' or '/'. No segment can be empty, '.' or '..', so a key cannot climb out
# of /proc/sys when the runtime turns it into a path.
_SEGMENT = r"[a-z0-9](?:[-_a-z0-9]*[a-z0-9])?"
_KEY_RE = re.compile(rf"{_SEGMENT}(?:[./]{_SEGMENT})*")
_KEY_MAX = 253

# What sysctl values need: numbers, words (e.g. tcp_congestion_control "bbr"), blanks between
# numbers ("1024 65000" for ip_local_port_range, tab-separated for kernel.sem), ranges with '-',
# lists with ',' (ip_local_reserved_ports "8080,30000-32767"), ':' and '/' in a few string
# values. Notably absent: '+' and '=' (CVE-2022-0811), quotes, newlines, NUL and every other
# control character, which could start a second "key=value" in any line-oriented consumer.
_VALUE_RE = re.compile(r"[A-Za-z0-9 \t.,:/_-]*")
# The kernel reads at most a page from a /proc/sys write; real values are far shorter.
_VALUE_MAX = 4096


def normalize_key(key: str) -> str:
    """Return ``key`` in '.' form.

    A key whose first separator is '/' is in path form: its '/' are separators and its '.' are
    part of a name (an interface such as ``eth0.100``), so the two are swapped, as Kubernetes,
    runc and systemd's sysctl do. Keys already in '.' form are returned unchanged.
    """
    for ch in key:
        if ch == ".":
            return key
        if ch == "/":
            return key.translate(_SWAP)
    return key


_SWAP = str.maketrans({".": "/", "/": "."})


def is_ipc(key: str) -> bool:
    """True for a ('.' form) sysctl that belongs to the IPC namespace."""
    return key in _IPC_KEYS or key.startswith(_IPC_PREFIX)


def is_net(key: str) -> bool:
    """True for a ('.' form) sysctl that belongs to the network namespace."""
    return key.startswith(_NET_PREFIX)


def validate(sysctls: Mapping[str, str], *, host_network: bool, host_ipc: bool) -> dict[str, str]:
    """Check every sysctl a pod asks for and return them with keys in '.' form.

    Raises InvalidSysctl naming the offending key when a key is malformed or not namespaced,
    when it would act on a namespace shared with the host, or when its value carries characters
    no sysctl needs.
    """
    out: dict[str, str] = {}
    for raw_key, value in sysctls.items():
        key = _check_key(raw_key)
        if is_net(key):
            if host_network:
                raise InvalidSysctl(
                    f"sysctl {key!r} is not allowed: the pod uses the host network namespace"
                )
        elif is_ipc(key):
            if host_ipc:
                raise InvalidSysctl(
                    f"sysctl {key!r} is not allowed: the pod uses the host IPC namespace"
                )
        else:
            raise InvalidSysctl(
                f"sysctl {key!r} is not allowed: it is not namespaced (only kernel.shm*, "
                "kernel.msg*, kernel.sem, fs.mqueue.* and net.* are)"
            )
        _check_value(key, value)
        if key in out and out[key] != value:
            raise InvalidSysctl(f"sysctl {key!r} is given twice with different values")
        out[key] = value
    return out


def _check_key(raw_key: str) -> str:
    if not isinstance(raw_key, str) or len(raw_key) > _KEY_MAX or not _KEY_RE.fullmatch(raw_key):
        raise InvalidSysctl(f"sysctl key {raw_key!r} is malformed")
    return normalize_key(raw_key)


def _check_value(key: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidSysctl(f"sysctl {key!r}: value must be a string")
    if len(value) > _VALUE_MAX:
        raise InvalidSysctl(f"sysctl {key!r}: value is longer than {_VALUE_MAX} characters")
    if not _VALUE_RE.fullmatch(value):
        # The value is not echoed: it may hold control characters meant for a log reader.
        raise InvalidSysctl(
            f"sysctl {key!r}: value contains characters no sysctl needs (allowed: letters, "
            "digits, blanks and . , : / _ -)"
        )
