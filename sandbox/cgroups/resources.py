"""The limits a pod cgroup can carry, checked once before any file is written."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sandbox.errors import CgroupError

# cgroup v1 bounds (kernel/sched/core.c, cpu.cfs_*_us): shares 2..262144, period 1ms..1s,
# quota >= 1ms or -1 for unlimited.
_SHARES_MIN, _SHARES_MAX = 2, 262144
_PERIOD_MIN, _PERIOD_MAX = 1000, 1_000_000
_QUOTA_MIN = 1000


@dataclass(frozen=True)
class Resources:
    memory_limit: int | None = None  # bytes; None leaves memory unlimited (swap still off)
    cpu_shares: int | None = None  # v1 cpu.shares; converted to cpu.weight on v2
    cpu_quota: int | None = None  # microseconds per period; -1 = unlimited
    cpu_period: int | None = None  # microseconds

    def __post_init__(self) -> None:
        _check_int("memory_limit", self.memory_limit, 1, None)
        _check_int("cpu_shares", self.cpu_shares, _SHARES_MIN, _SHARES_MAX)
        _check_int("cpu_period", self.cpu_period, _PERIOD_MIN, _PERIOD_MAX)
        if self.cpu_quota != -1:
            _check_int("cpu_quota", self.cpu_quota, _QUOTA_MIN, None)


def _check_int(name: str, value: int | None, low: int, high: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise CgroupError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise CgroupError(f"{name} {value} out of range (must be {bounds})")


def shares_to_weight(shares: int) -> int:
    """Map v1 cpu.shares [2, 262144] onto v2 cpu.weight [1, 10000].

    The curve runc and crun adopted: a quadratic in log2(shares) through (2, 1), (1024, 100)
    and (262144, 10000), so the v1 default lands on the v2 default. The older linear formula
    gave 1024 shares a weight of 39.
    """
    if shares <= _SHARES_MIN:
        return 1
    if shares >= _SHARES_MAX:
        return 10000
    log2 = math.log2(shares)
    exponent = (log2 * log2 + 125 * log2) / 612.0 - 7.0 / 34.0
    return min(10000, max(1, math.ceil(10**exponent)))
