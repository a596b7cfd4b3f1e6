"""Which namespaces a pod's processes are in, by inode, and which of them they share.

``/proc/PID/ns/TYPE`` is a link named ``TYPE:[INODE]``: two processes are in the same namespace
exactly when the inodes match (what ``lsns`` compares). A container's namespace is "host" when
it is the host's, "shared" when it is the infra's, and "private" otherwise. The host's are the
ones this command runs in, the node's (PID 1's may not be readable, e.g. on a kind node or
under a restricted ptrace policy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROC = Path("/proc")
TYPES = ("net", "ipc", "uts", "pid", "mnt", "cgroup", "user")
_LINK_RE = re.compile(r"([a-z_]+):\[(\d+)\]")

Namespaces = dict[str, int]  # type -> inode; a type the kernel lacks is left out


def read(pid: int | str, proc: Path = PROC) -> Namespaces | None:
    """The namespaces of ``pid`` ("self": this process's); None when the process is gone. A
    type that cannot be read (EACCES) is left out."""
    found: Namespaces = {}
    for kind in TYPES:
        try:
            link = os.readlink(proc / str(pid) / "ns" / kind)
        except FileNotFoundError:
            if not (proc / str(pid)).exists():
                return None
            continue  # a kernel built without this namespace type
        except ProcessLookupError:
            return None
        except PermissionError:
            continue
        m = _LINK_RE.fullmatch(link)
        if m is not None:
            found[kind] = int(m.group(2))
    return found


def infra_sharing(infra: Namespaces, host: Namespaces) -> dict[str, str]:
    """For the infra itself: "host" where it is in the host's namespace, else "pod"."""
    return {kind: "host" if host.get(kind) == ino else "pod" for kind, ino in infra.items()}


def sharing(own: Namespaces, infra: Namespaces | None, host: Namespaces) -> dict[str, str]:
    """For a container: "shared" (with the infra), "host" or "private", per namespace type.
    With the infra gone only "host" and "private" can be told apart."""
    out: dict[str, str] = {}
    for kind, ino in own.items():
        # The host's first: a container of a host-network pod shares the infra's network,
        # but what tells is that it is the host's.
        if host.get(kind) == ino:
            out[kind] = "host"
        elif infra is not None and infra.get(kind) == ino:
            out[kind] = "shared"
        else:
            out[kind] = "private"
    return out
