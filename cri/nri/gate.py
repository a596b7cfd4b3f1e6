"""The sync gate: CRI calls that add or remove pods and containers pass it together; a plugin's
initial synchronization passes it alone.

A plugin that joins gets a snapshot of every pod and container (Synchronize) and from then on
the events. A container created while the snapshot is taken and sent must end up in one or the
other, never neither (critest's "NRI plugin synchronization" specs): so a creation holds the
gate shared from its CreateContainer event until the container is in the store, and a
synchronization holds it exclusive from the snapshot until the plugin is among those that get
events. A waiting synchronization stops new shared holders (else a steady stream of creations
would starve it); creations wait at most the plugin's registration timeout.

Shared holds nest within one task (and the tasks it starts while holding), so code under the
gate may call code that takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar

_holding: ContextVar[bool] = ContextVar("nri_gate_holding", default=False)


class SyncGate:
    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0
        self._changed: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        return self._exclusive or self._exclusive_waiting > 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if _holding.get():
            yield
            return
        while self.busy:
            await self._wait()
        self._shared += 1
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)
            self._shared -= 1
            self._notify()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._exclusive_waiting += 1
        try:
            while self._exclusive or self._shared:
                await self._wait()
        finally:
            self._exclusive_waiting -= 1
            self._notify()  # shared waiters held back by this one may go if it gave up
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._notify()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def _notify(self) -> None:
        if self._changed is not None:
            if not self._changed.done():
                self._changed.set_result(None)
            self._changed = None
