"""The sync gate: creations pass together, a plugin's synchronization alone, and a waiting
synchronization goes before creations that arrive after it."""

from __future__ import annotations

import asyncio

from cri.nri.gate import SyncGate
from tests.unit.cri.nri.aio import run


def test_shared_holders_overlap_and_exclusive_waits_for_them() -> None:
    async def scenario() -> None:
        gate, log = SyncGate(), []
        release = asyncio.Event()

        async def create(name: str) -> None:
            async with gate.shared():
                log.append(f"{name} in")
                await release.wait()
                log.append(f"{name} out")

        async def sync() -> None:
            async with gate.exclusive():
                log.append("sync")

        creations = [asyncio.create_task(create(n)) for n in ("a", "b")]
        await asyncio.sleep(0)
        syncing = asyncio.create_task(sync())
        await asyncio.sleep(0)
        late = asyncio.create_task(create("late"))  # arrives while the sync waits
        await asyncio.sleep(0.01)
        assert log == ["a in", "b in"]
        release.set()
        await asyncio.gather(*creations, syncing, late)
        assert log == ["a in", "b in", "a out", "b out", "sync", "late in", "late out"]

    run(scenario)


def test_shared_nests_within_a_task_even_while_a_sync_waits() -> None:
    async def scenario() -> None:
        gate = SyncGate()
        inner_done = asyncio.Event()

        async def outer() -> None:
            async with gate.shared():
                await asyncio.sleep(0.01)  # a sync starts waiting meanwhile
                async with gate.shared():
                    inner_done.set()

        async def sync() -> None:
            async with gate.exclusive():
                pass

        task = asyncio.create_task(outer())
        await asyncio.sleep(0)
        await asyncio.gather(task, sync())
        assert inner_done.is_set()

    run(scenario)


def test_a_cancelled_sync_lets_waiting_creations_through() -> None:
    async def scenario() -> None:
        gate = SyncGate()
        hold = asyncio.Event()

        async def holder() -> None:
            async with gate.shared():
                await hold.wait()

        async def sync() -> None:
            async with gate.exclusive():
                pass

        async def create() -> None:
            async with gate.shared():
                pass

        h = asyncio.create_task(holder())
        await asyncio.sleep(0)
        s = asyncio.create_task(sync())
        await asyncio.sleep(0)
        c = asyncio.create_task(create())
        await asyncio.sleep(0.01)
        assert not c.done()
        s.cancel()
        await c  # no longer held back
        hold.set()
        await h

    run(scenario)
