"""A process's cgroup and the limits the kernel holds for it, read back from the cgroup files.

Limits nest: a container cgroup without a memory limit is still held to its pod's. ``limits``
are the cgroup's own files, ``effective`` the tightest of the cgroup and its ancestors (a
Burstable container's "max" under a pod cgroup that caps the pod).

``/proc/PID/cgroup`` names the cgroup per hierarchy (``ID:controllers:path``; v2 has the single
line ``0::path``), so this works for the cgroupfs and the systemd driver alike: either way the
path is where the files are. v1 spreads the limits over the memory, cpu and pids hierarchies;
v2 keeps them in one directory. Values the kernel reports as unlimited are "max" on both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cri.inspect.namespaces import PROC
from sandbox.cgroups import DEFAULT_ROOT, V2Layout, detect
from sandbox.cgroups.stats import V1_UNLIMITED_FLOOR, read_control_file
from sandbox.errors import CgroupError

Limit = int | str | None  # bytes or a count, "max", or None when the host has no such file
KEYS = ("memory", "swap", "cpu_quota", "cpu_period", "cpu_weight", "cpu_shares", "pids")
# What nests as a ceiling (weights and shares are relative among siblings: nothing to combine).
EFFECTIVE_KEYS = ("memory", "swap", "cpu_quota", "cpu_period", "pids")


@dataclass(frozen=True)
class CgroupInfo:
    version: int  # 1 (including hybrid hosts) or 2
    path: str  # v2: the cgroup; v1: the memory hierarchy's (the others match under pycri)
    paths: dict[str, str]  # v1: controller -> path of each hierarchy the limits come from
    limits: dict[str, Limit]  # every key of KEYS
    effective: dict[str, Limit]  # every key of EFFECTIVE_KEYS


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as controller -> path; the v2 line is under "" and a named v1
    hierarchy under its name ("name=systemd")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def read(pid: int, *, root: Path = DEFAULT_ROOT, proc: Path = PROC) -> CgroupInfo | None:
    """The cgroup of ``pid`` and its limits; None when the process is gone."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return limits_of(parse_proc_cgroup(text), root=root)


def limits_of(paths: dict[str, str], *, root: Path = DEFAULT_ROOT) -> CgroupInfo:
    try:
        layout = detect(root)
    except CgroupError:
        return CgroupInfo(0, paths.get("", ""), {}, dict.fromkeys(KEYS),
                          dict.fromkeys(EFFECTIVE_KEYS))
    if isinstance(layout, V2Layout):
        path = paths.get("", "")
        levels = [_v2(d) for d in _ancestors(layout.root, path)]
        return CgroupInfo(2, path, {}, levels[0], _tightest(levels))

    def where(controller: str) -> list[Path]:
        base = layout.dir_of(controller)
        if base is None or controller not in paths:
            return []
        return list(_ancestors(base, paths[controller]))

    used: dict[str, str] = {c: paths[c] for c in ("memory", "cpu", "pids") if c in paths}
    path = paths.get("memory") or next(iter(used.values()), paths.get("", ""))
    levels = [_v1(m, c, p) for m, c, p in
              itertools.zip_longest(where("memory"), where("cpu"), where("pids"))]
    if not levels:
        levels = [_v1(None, None, None)]
    return CgroupInfo(1, path, used, levels[0], _tightest(levels))


def _ancestors(base: Path, path: str) -> Iterator[Path]:
    """The cgroup's directory, then each parent's up to (not including) the hierarchy root,
    where no limit can be set."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), 0, -1):
        yield base.joinpath(*parts[:depth])
    if not parts:
        yield base


def _tightest(levels: list[dict[str, Limit]]) -> dict[str, Limit]:
    out: dict[str, Limit] = {}
    for key in ("memory", "swap", "pids"):
        values = [lv[key] for lv in levels if lv[key] is not None]
        numbers = [v for v in values if isinstance(v, int)]
        out[key] = min(numbers) if numbers else ("max" if values else None)
    # CPU bandwidth is a share of a period: the smallest quota/period ratio wins.
    quotas = [(lv["cpu_quota"], lv["cpu_period"]) for lv in levels
              if isinstance(lv["cpu_quota"], int) and isinstance(lv["cpu_period"], int)
              and lv["cpu_period"] > 0]
    if quotas:
        out["cpu_quota"], out["cpu_period"] = min(quotas, key=lambda qp: qp[0] / qp[1])
    else:
        out["cpu_quota"] = levels[0]["cpu_quota"]
        out["cpu_period"] = levels[0]["cpu_period"]
    return out


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    text = read_control_file(path)  # None also for a cgroup removed while it is read (ENODEV)
    return None if text is None else text.strip()


def _count(text: str | None) -> Limit:
    if text is None:
        return None
    return "max" if text == "max" else int(text)


def _v2(d: Path) -> dict[str, Limit]:
    quota: Limit = None
    period: Limit = None
    cpu_max = _read(d / "cpu.max")
    if cpu_max is not None:
        q, _, p = cpu_max.partition(" ")
        quota, period = _count(q), int(p) if p else None
    return {
        "memory": _count(_read(d / "memory.max")),
        "swap": _count(_read(d / "memory.swap.max")),
        "cpu_quota": quota,
        "cpu_period": period,
        "cpu_weight": _count(_read(d / "cpu.weight")),
        "cpu_shares": None,
        "pids": _count(_read(d / "pids.max")),
    }


def _v1_bytes(text: str | None) -> Limit:
    if text is None:
        return None
    value = int(text)
    return "max" if value >= V1_UNLIMITED_FLOOR else value


def _v1(memory: Path | None, cpu: Path | None, pids: Path | None) -> dict[str, Limit]:
    mem = _v1_bytes(_read(memory and memory / "memory.limit_in_bytes"))
    # v1 limits memory+swap together: the swap a cgroup may use is what memsw allows beyond
    # its memory limit (0 when they are equal, pycri's default).
    memsw = _v1_bytes(_read(memory and memory / "memory.memsw.limit_in_bytes"))
    swap: Limit = memsw
    if isinstance(memsw, int) and isinstance(mem, int):
        swap = memsw - mem
    quota = _read(cpu and cpu / "cpu.cfs_quota_us")
    period = _read(cpu and cpu / "cpu.cfs_period_us")
    shares = _read(cpu and cpu / "cpu.shares")
    return {
        "memory": mem,
        "swap": swap,
        "cpu_quota": None if quota is None else "max" if int(quota) < 0 else int(quota),
        "cpu_period": None if period is None else int(period),
        "cpu_weight": None,
        "cpu_shares": None if shares is None else int(shares),
        "pids": _count(_read(pids and pids / "pids.max")),
    }
