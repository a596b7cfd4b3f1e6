"""FairSlots: at most N layers at once; a freed slot goes to the pull holding the fewest."""

from __future__ import annotations

import asyncio

import pytest

from cri.image.layer_slots import FairSlots, default_slots


def test_default_keeps_more_slots_than_cores_within_bounds() -> None:
    assert 4 <= default_slots() <= 8


def test_a_late_small_pull_is_served_before_the_big_pulls_rest() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(2)
        order: list[str] = []
        gates: dict[str, asyncio.Event] = {}

        async def layer(owner: str, i: int) -> None:
            async with slots.slot(owner):
                order.append(f"{owner}{i}")
                gate = gates[f"{owner}{i}"] = asyncio.Event()
                await gate.wait()

        big = [asyncio.create_task(layer("big", i)) for i in range(5)]
        await asyncio.sleep(0)
        small = [asyncio.create_task(layer("small", i)) for i in range(2)]
        await asyncio.sleep(0)
        assert order == ["big0", "big1"] and slots.busy == 2
        for name in ("big0", "big1", "small0", "big2", "small1", "big3", "big4"):
            for _ in range(5):  # the release, the grant, the next holder's start
                await asyncio.sleep(0)
            gates[name].set()
        await asyncio.gather(*big, *small)
        assert slots.busy == 0 and slots.held == {}
        return order

    # big0 ends: small (holding none) goes first; big1 ends: big holds 0 and small 1 -> big.
    assert asyncio.run(scenario()) == ["big0", "big1", "small0", "big2", "small1", "big3",
                                       "big4"]


def test_cancelled_waiters_give_their_turn_on() -> None:
    async def scenario() -> None:
        slots = FairSlots(1)
        release = asyncio.Event()
        got: list[str] = []

        async def hold(owner: str) -> None:
            async with slots.slot(owner):
                got.append(owner)
                await release.wait()

        first = asyncio.create_task(hold("a"))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(hold("b"))
        last = asyncio.create_task(hold("c"))
        await asyncio.sleep(0)
        waiting.cancel()  # gives up while waiting
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        await asyncio.gather(first, last)
        assert got == ["a", "c"] and slots.busy == 0 and slots.held == {}

    asyncio.run(scenario())


def test_a_slot_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    async def scenario() -> None:
        slots = FairSlots(1)
        async with slots.slot("a"):
            second = asyncio.create_task(slots.slot("b").__aenter__())
            third = asyncio.create_task(slots.slot("c").__aenter__())
            await asyncio.sleep(0)  # both wait
        # Leaving gave b the slot, but b is cancelled before it runs again: c gets it.
        assert slots.held == {"b": 1}
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        await third
        assert slots.held == {"c": 1} and slots.busy == 1

    asyncio.run(scenario())


def test_no_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FairSlots(0)
