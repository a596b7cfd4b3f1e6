"""Tasks shared by everyone asking for the same thing (one pull of an image, one download of
a layer), cancelled - and waited for, so their cleanup is done - when the last asker leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SharedTasks(Generic[T]):
    def __init__(self) -> None:
        self._tasks: dict[str, tuple[asyncio.Task[T], list[int]]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: str, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        entry = self._tasks.get(key)
        if entry is None:
            task = asyncio.ensure_future(factory())
            entry = (task, [0])
            self._tasks[key] = entry

            def forget(done: asyncio.Task[T], key: str = key) -> None:
                current = self._tasks.get(key)
                if current is not None and current[0] is done:
                    del self._tasks[key]

            task.add_done_callback(forget)
        task, waiters = entry
        waiters[0] += 1
        try:
            return await asyncio.shield(task)
        finally:
            waiters[0] -= 1
            if waiters[0] == 0 and not task.done():
                task.cancel()
                await until_done(task)  # its cleanup has run when we return


async def until_done(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to finish even if we are cancelled again meanwhile (a TaskGroup
    cancels its children once for a failed sibling and again when its parent is cancelled);
    a cancellation that arrived is re-raised once the task is done."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
