"""Percentiles for the benchmarks (nearest rank on the sorted samples), and their table."""

from __future__ import annotations

import statistics


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def print_table(results: dict[str, list[float]], targets: dict[str, float] | None = None,
                decimals: int = 2) -> None:
    """p50, p90 and mean of each operation in ms; with ``targets``, the p50 target beside it."""
    head = f"{'operation':<18}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}"
    print(head + (f"{'target p50':>12}" if targets is not None else ""))
    for op, samples in results.items():
        row = (f"{op:<18}{pct(samples, 50):9.{decimals}f}{pct(samples, 90):9.{decimals}f}"
               f"{statistics.mean(samples):9.{decimals}f}")
        if targets is not None:
            target = targets.get(op)
            row += f"{(f'<= {target:.0f}' if target else '-'):>12}"
        print(row)
