"""The container event bus: fan-out in order, bounded per subscriber, publish never waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from cri.api import api_pb2
from cri.errors import ResourceExhausted, Unavailable
from cri.runtime.events import QUEUE_LIMIT, EventBus

Stream = AsyncGenerator[api_pb2.ContainerEventResponse, None]


def event(n: int) -> api_pb2.ContainerEventResponse:
    return api_pb2.ContainerEventResponse(
        container_id=f"c{n}", container_event_type=api_pb2.ContainerEventType.CONTAINER_STARTED_EVENT,
        created_at=n)


async def subscribed(bus: EventBus) -> tuple[Stream, asyncio.Task[api_pb2.ContainerEventResponse]]:
    """Start a subscription: its queue exists once the generator runs up to its first wait.

    Returns the stream and the pending task for its first event.
    """
    before = bus.subscribers
    stream = bus.subscribe()
    assert isinstance(stream, AsyncGenerator)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # one loop turn: the task runs up to its first wait on the queue
    assert bus.subscribers == before + 1
    return stream, first


async def _fan_out() -> None:
    bus = EventBus(limit=10)
    assert bus.subscribers == 0
    a, a_first = await subscribed(bus)
    b, b_first = await subscribed(bus)
    assert bus.subscribers == 2
    for n in range(5):
        bus.publish(event(n))
    got_a = [await a_first] + [await anext(a) for _ in range(4)]
    got_b = [await b_first] + [await anext(b) for _ in range(4)]
    assert [e.created_at for e in got_a] == [0, 1, 2, 3, 4]
    assert got_b == got_a
    assert got_a[0] == event(0)
    await a.aclose()
    await b.aclose()
    assert bus.subscribers == 0


def test_publish_reaches_every_subscriber_in_order() -> None:
    asyncio.run(_fan_out())


async def _slow_subscriber_is_cut_off() -> None:
    limit = 4
    bus = EventBus(limit=limit)
    slow, slow_first = await subscribed(bus)
    fast, fast_first = await subscribed(bus)
    bus.publish(event(0))
    assert (await slow_first).created_at == 0
    # From here the slow one stops reading; the fast one reads every event as it comes.
    got_fast = [await fast_first]
    for n in range(1, 3 * limit):
        bus.publish(event(n))  # synchronous: returns without the slow subscriber reading
        got_fast.append(await anext(fast))
        # Cut off exactly when a (limit+1)th event finds its queue full.
        assert bus.subscribers == (2 if n <= limit else 1)
    assert [e.created_at for e in got_fast] == list(range(3 * limit))

    # The slow one still gets the `limit` events queued before the cut, then the error.
    got_slow = [await anext(slow) for _ in range(limit)]
    assert [e.created_at for e in got_slow] == list(range(1, limit + 1))
    with pytest.raises(ResourceExhausted, match=f"{limit} events behind"):
        await anext(slow)
    with pytest.raises(StopAsyncIteration):  # the stream is over, not just paused
        await anext(slow)

    bus.publish(event(99))
    assert (await anext(fast)).created_at == 99
    await fast.aclose()
    assert bus.subscribers == 0


def test_a_subscriber_that_stops_reading_is_cut_off() -> None:
    asyncio.run(_slow_subscriber_is_cut_off())


async def _publish_without_readers() -> None:
    bus = EventBus(limit=2)
    bus.publish(event(0))  # no subscriber at all: nothing to do
    stream, first = await subscribed(bus)
    for n in range(1, 10_000):
        bus.publish(event(n))
    # Bounded: the subscriber holds at most `limit` events plus the cut-off marker.
    assert bus.subscribers == 0
    assert (await first).created_at == 1
    assert (await anext(stream)).created_at == 2
    with pytest.raises(ResourceExhausted):
        await anext(stream)


def test_publish_never_waits_and_queues_stay_bounded() -> None:
    asyncio.run(_publish_without_readers())


async def _unsubscribe_by_close() -> None:
    bus = EventBus()
    stream, first = await subscribed(bus)
    bus.publish(event(1))
    assert (await first).created_at == 1
    await stream.aclose()  # what grpc does when the client goes away
    assert bus.subscribers == 0
    bus.publish(event(2))  # nobody left to deliver to; must not raise
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


def test_closing_the_stream_unsubscribes() -> None:
    asyncio.run(_unsubscribe_by_close())


async def _unsubscribe_by_cancel() -> None:
    bus = EventBus()
    _, first = await subscribed(bus)
    other, other_first = await subscribed(bus)
    first.cancel()  # the handler task is cancelled while waiting for an event
    with pytest.raises(asyncio.CancelledError):
        await first
    assert bus.subscribers == 1
    bus.publish(event(7))
    assert (await other_first).created_at == 7
    await other.aclose()


def test_cancelling_a_waiting_stream_unsubscribes() -> None:
    asyncio.run(_unsubscribe_by_cancel())


def test_default_limit() -> None:
    assert EventBus().limit == QUEUE_LIMIT == 1024


async def _close_ends_streams() -> None:
    bus = EventBus()
    a, a_first = await subscribed(bus)
    b, b_first = await subscribed(bus)
    bus.close()
    for first in (a_first, b_first):
        with pytest.raises(Unavailable):
            await first
    assert bus.subscribers == 0
    bus.publish(event(1))  # nobody left to tell; nothing queued
    with pytest.raises(Unavailable):
        await anext(bus.subscribe())
    for stream in (a, b):
        await stream.aclose()


def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    asyncio.run(_close_ends_streams())
