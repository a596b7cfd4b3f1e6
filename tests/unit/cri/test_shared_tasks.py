"""SharedTasks: one task per key for everyone asking, cancelled and waited for - its cleanup
done - when the last asker leaves, even if that asker is cancelled more than once."""

from __future__ import annotations

import asyncio

import pytest

from cri.image.shared import SharedTasks, until_done


def test_askers_share_one_task_and_get_its_result() -> None:
    runs: list[str] = []

    async def job() -> str:
        runs.append("x")
        await asyncio.sleep(0)
        return "done"

    async def scenario() -> list[str]:
        shared: SharedTasks[str] = SharedTasks()
        got = await asyncio.gather(*(shared.run("k", job) for _ in range(3)))
        assert len(shared) == 0
        return got

    assert asyncio.run(scenario()) == ["done"] * 3
    assert runs == ["x"]


def test_the_last_asker_cancelled_twice_still_waits_for_the_cleanup() -> None:
    # What a pull's TaskGroup does to a layer download: cancelled for a failed sibling, then
    # again for its own caller's deadline, while the download is still cleaning up.
    cleaned: list[bool] = []

    async def job() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.shield(asyncio.sleep(0.2))  # a cleanup that takes a while
            cleaned.append(True)
        return "never"

    async def scenario() -> None:
        shared: SharedTasks[str] = SharedTasks()
        asker = asyncio.ensure_future(shared.run("k", job))
        await asyncio.sleep(0.01)
        asker.cancel()
        await asyncio.sleep(0.01)
        asker.cancel()  # lands while the asker waits for the job's cleanup
        with pytest.raises(asyncio.CancelledError):
            await asker
        assert cleaned == [True]

    asyncio.run(scenario())


def test_until_done_waits_through_cancellation_and_then_reraises_it() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        task = asyncio.ensure_future(gate.wait())
        waiter = asyncio.ensure_future(until_done(task))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        assert not waiter.done()  # still waiting for the task
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert task.done()

    asyncio.run(scenario())
