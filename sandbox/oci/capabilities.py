"""Linux capabilities of a container: names, the daemon's bounding set, the OCI capability sets.

The CRI gives capabilities without the ``CAP_`` prefix ("NET_ADMIN") plus the keyword "ALL";
the OCI spec wants ``CAP_*`` names. The arithmetic follows CRI-O and containerd so a pod spec
means the same thing on every runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# linux/capability.h, indexed by capability number. CapBnd and friends in /proc/<pid>/status
# are bit masks over these numbers.
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",  # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",  # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",  # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",  # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",  # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",  # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",  # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",  # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",  # 40
)
_KNOWN = frozenset(ALL_CAPABILITIES)

# CRI-O's default set. Narrower than Docker's: no NET_RAW (raw sockets allow ARP and ICMP
# spoofing on the pod network), MKNOD, AUDIT_WRITE, SYS_CHROOT or SETFCAP.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
)

ALL = "ALL"  # the CRI keyword for "every capability" in add or drop lists


def normalize(name: str) -> str:
    """``"chown"``, ``"CHOWN"`` and ``"CAP_CHOWN"`` -> ``"CAP_CHOWN"``; unknown names raise."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in _KNOWN:
        raise ValueError(f"unknown capability {name!r}")
    return full


def bounding_set(status_path: Path = Path("/proc/self/status")) -> frozenset[str]:
    """The capabilities this process may hand to its children (``CapBnd``), by name.

    runc cannot grant a container a capability outside its own bounding set, so this is the
    ceiling for "privileged" and "ALL". Bits above the names the table knows (a newer kernel)
    are left out: runc would not know them either.
    """
    for line in status_path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "CapBnd":
            mask = int(value.strip(), 16)
            return frozenset(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)
    raise ValueError(f"{status_path} has no CapBnd line")


def _is_all(name: str) -> bool:
    return name.strip().upper() == ALL


def container_capabilities(
    add: Sequence[str],
    drop: Sequence[str],
    *,
    privileged: bool,
    bounding: frozenset[str],
) -> dict[str, list[str]]:
    """The OCI ``process.capabilities`` object for a container.

    Privileged containers get the whole ``bounding`` set. Otherwise, as in CRI-O and
    containerd: start from :data:`DEFAULT_CAPABILITIES`; "ALL" in ``add`` grants everything,
    "ALL" in ``drop`` clears everything (defaults too); then the named additions, then the
    named drops, so an explicit drop always wins. An unknown name raises ValueError; a
    privileged container ignores both lists, as in CRI-O.
    """
    if privileged:
        wanted = set(_KNOWN)
    else:
        added = [normalize(name) for name in add if not _is_all(name)]
        dropped = [normalize(name) for name in drop if not _is_all(name)]
        wanted = set(DEFAULT_CAPABILITIES)
        if any(_is_all(name) for name in add):
            wanted = set(_KNOWN)
        if any(_is_all(name) for name in drop):
            wanted.clear()
        wanted.update(added)
        wanted.difference_update(dropped)

    # runc fails the whole create when asked for a capability it does not hold; what the
    # daemon lacks (here CAP_SYS_RESOURCE) the container cannot have anyway.
    missing = wanted - bounding
    if missing and not privileged:
        log.debug("capabilities outside the daemon's bounding set left out: %s", sorted(missing))
    granted = sorted(wanted & bounding)
    return {
        "bounding": list(granted),
        "effective": list(granted),
        "permitted": list(granted),
        # Always empty (CVE-2022-27652): inheritable capabilities survive an execve of a
        # program with matching file capabilities, letting an unprivileged user inside the
        # container gain them. Ambient ones would hand them to every non-root process.
        "inheritable": [],
        "ambient": [],
    }
