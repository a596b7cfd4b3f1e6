"""OOM score adjustment the daemon can actually grant.

Lowering a process's oom_score_adj below the value it inherited needs CAP_SYS_RESOURCE
(proc(5); the kernel keeps the floor in signal->oom_score_adj_min). Where the daemon lacks it
(rootless, or this project's VMs) asking runc for a lower value makes container creation fail,
so the request is raised to the daemon's own value instead - containerd's restrict_oom_score_adj.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
_CAP_SYS_RESOURCE = 24  # linux/capability.h

_warned = False
_warn_lock = threading.Lock()


def clamp_oom_score_adj(requested: int, *, proc_self: Path = Path("/proc/self")) -> int:
    """Return the oom_score_adj closest to ``requested`` that this process may set.

    Always within [-1000, 1000]; without CAP_SYS_RESOURCE also not below the daemon's own
    value. The first time a request is raised a WARNING says why; later ones are silent so
    the log does not grow with every container.
    """
    value = max(OOM_SCORE_ADJ_MIN, min(OOM_SCORE_ADJ_MAX, requested))
    if _has_cap_sys_resource(proc_self):
        return value
    own = int((proc_self / "oom_score_adj").read_text())
    if value >= own:
        return value
    _warn_once(requested, own)
    return own


def _has_cap_sys_resource(proc_self: Path) -> bool:
    for line in (proc_self / "status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def _warn_once(requested: int, own: int) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning(
        "oom_score_adj %d raised to %d: without CAP_SYS_RESOURCE no process may go below the "
        "daemon's own oom_score_adj; further adjustments are not logged",
        requested,
        own,
    )
