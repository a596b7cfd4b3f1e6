"""Container lifecycle events for GetContainerEvents (the kubelet's Evented PLEG).

Publishing never waits: each subscriber has a bounded queue, and a subscriber that falls that
far behind is cut off (its stream ends with RESOURCE_EXHAUSTED) rather than slowing the daemon
or growing without bound. The kubelet then resubscribes and relists, which is exactly what its
PLEG does when a stream breaks.

Streams never end on their own, so the daemon ends them (``close``) when it shuts down: a grpc
server waits for in-flight calls up to its grace period, and a subscribed kubelet kept every
SIGTERM of pycri waiting that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from cri.api import api_pb2
from cri.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1024
_OVERFLOW = object()
_CLOSED = object()


class EventBus:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self._subscribers: set[asyncio.Queue[object]] = set()
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: api_pb2.ContainerEventResponse) -> None:
        for q in list(self._subscribers):
            if q.qsize() >= self.limit:
                log.warning("container event subscriber is %d events behind; cutting it off",
                            self.limit)
                self._subscribers.discard(q)
                q.put_nowait(_OVERFLOW)  # unbounded queue: the marker always fits
                continue
            q.put_nowait(event)

    def close(self) -> None:
        """Ends every stream (UNAVAILABLE: the daemon is going away) and refuses new ones."""
        self._closed = True
        for q in self._subscribers:
            q.put_nowait(_CLOSED)
        self._subscribers.clear()

    async def subscribe(self) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        if self._closed:
            raise Unavailable("pycri is shutting down")
        q: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            while True:
                item = await q.get()
                if item is _OVERFLOW:
                    raise ResourceExhausted(
                        f"container event stream fell {self.limit} events behind; resubscribe")
                if item is _CLOSED:
                    raise Unavailable("pycri is shutting down")
                assert isinstance(item, api_pb2.ContainerEventResponse)
                yield item
        finally:
            self._subscribers.discard(q)
