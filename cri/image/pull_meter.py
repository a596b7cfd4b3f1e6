"""Bytes received from registries, counted per image pull (for [pycri.metrics]).

A context variable rather than a counter handed down every call: the registry client counts
what it receives, and the tasks a pull starts (its layer downloads) inherit the pull's meter.
A layer download shared with a later pull of another image counts for the pull that started
it, so the bytes of all pulls add up to what crossed the wire.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass


@dataclass
class PullMeter:
    received: int = 0


_current: contextvars.ContextVar[PullMeter | None] = contextvars.ContextVar("pull_meter",
                                                                           default=None)


def start() -> PullMeter:
    """A new meter for the current task and the tasks it starts from now on."""
    meter = PullMeter()
    _current.set(meter)
    return meter


# Layer worker threads (which inherit the pull's context through asyncio.to_thread) count at
# once: `+=` on an attribute is not atomic across threads.
_lock = threading.Lock()


def received(n: int) -> None:
    meter = _current.get()
    if meter is not None:
        with _lock:
            meter.received += n
