"""Where a pull's time goes, per stage (request, first byte, download, verify, inflate,
hash_tar, tar, write, commit), for bench/image_pull.py and for anyone chasing a slow pull.

Off unless PYCRI_PULL_STAGES=1 is in the daemon's environment: then each layer gets a
StageClock and the pull logs one "pull stages of IMAGE: {json}" line (seconds summed over
its layers). Off, every call is to NULL_CLOCK, whose methods do nothing.

The clock is exclusive: time is charged to the innermost stage entered, so a write that has
to wait for the next decompressed chunk charges that wait to inflate (or download), not write.
"""

from __future__ import annotations

import os
import time

ENABLED = os.environ.get("PYCRI_PULL_STAGES") == "1"


class StageClock:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._stack = ["other"]
        self._t = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        top = self._stack[-1]
        self.totals[top] = self.totals.get(top, 0.0) + now - self._t
        self._t = now

    def enter(self, stage: str) -> None:
        self._charge()
        self._stack.append(stage)

    def leave(self) -> None:
        self._charge()
        if len(self._stack) > 1:
            self._stack.pop()

    def add(self, stage: str, seconds: float) -> None:
        """Time measured elsewhere (in another thread, or the event loop)."""
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds


class NullClock(StageClock):
    def enter(self, stage: str) -> None:
        pass

    def leave(self) -> None:
        pass

    def add(self, stage: str, seconds: float) -> None:
        pass


NULL_CLOCK = NullClock()


def new_clock() -> StageClock:
    return StageClock() if ENABLED else NULL_CLOCK


def summed(clocks: list[StageClock]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in clocks:
        for k, v in c.totals.items():
            if k != "other":
                out[k] = round(out.get(k, 0.0) + v, 4)
    return out
