"""Percentiles for the benchmarks (nearest rank on the sorted samples)."""

from __future__ import annotations


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]
