"""How many layers download and unpack at once, and whose turn it is.

A layer's worker thread keeps about one core busy (receive, digest, inflate, diff_id, writes:
all in C, the GIL let go), so a few more slots than cores keep every core at work while some
layers wait on the network. When pulls compete, a freed slot goes to the waiting pull that
holds the fewest slots (the longest waiting among equals): a pull of a 40-layer image started
first does not make a small one wait for all of its layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator


def default_slots() -> int:
    return max(4, min(8, (os.cpu_count() or 1) + 2))


class FairSlots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("at least one slot")
        self.limit = limit
        self.busy = 0
        self.held: dict[str, int] = {}
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []

    @contextlib.asynccontextmanager
    async def slot(self, owner: str) -> AsyncIterator[None]:
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release(owner)

    async def _acquire(self, owner: str) -> None:
        if self.busy < self.limit and not self._waiting:
            self._grant(owner)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (owner, fut)
        self._waiting.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(owner)  # granted, but its waiter is gone: pass it on
            elif entry in self._waiting:
                self._waiting.remove(entry)
            raise

    def _grant(self, owner: str) -> None:
        self.busy += 1
        self.held[owner] = self.held.get(owner, 0) + 1

    def _release(self, owner: str) -> None:
        self.busy -= 1
        left = self.held.get(owner, 0) - 1
        if left > 0:
            self.held[owner] = left
        else:
            self.held.pop(owner, None)
        self._wake()

    def _wake(self) -> None:
        while self.busy < self.limit and self._waiting:
            # min() keeps the first of equals: the one waiting longest.
            i = min(range(len(self._waiting)),
                    key=lambda j: self.held.get(self._waiting[j][0], 0))
            owner, fut = self._waiting.pop(i)
            if fut.done():  # cancelled while waiting
                continue
            self._grant(owner)
            fut.set_result(None)
