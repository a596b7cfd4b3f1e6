"""An asyncio ttrpc client over a MessageStream: ``call`` sends a request and awaits its answer.

Calls run concurrently on one connection, each on its own stream. A timeout bounds the whole
call, the write included (a peer that stops reading cannot wedge the caller); it is also sent to
the server as the request's timeout_nano, like a Go context deadline. A call that times out or is
cancelled is forgotten, and its late answer dropped. When the connection ends, pending and later
calls fail with ConnectionClosed (UNAVAILABLE) and ``wait_closed`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cri.nri.transport import MessageStream
from cri.nri.ttrpc_client_proto import ClientConnection, Failed, Outcome
from cri.nri.ttrpc_status import ConnectionClosed, TtrpcError, parse

M = TypeVar("M", bound=Message)


class TtrpcClient:
    """Create it inside the event loop: it starts reading the stream at once."""

    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream
        self._conn = ClientConnection()
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read_loop(), name="ttrpc-client")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def call(self, service: str, method: str, payload: bytes, *,
                   timeout: float | None = None,  # noqa: ASYNC109 - it travels in the request too
                   metadata: Iterable[tuple[str, str]] = ()) -> bytes:
        """The response payload of ``service``/``method``; TtrpcError with the status otherwise."""
        if self.closed:
            raise ConnectionClosed()
        timeout_ns = max(1, int(timeout * 1e9)) if timeout is not None else 0
        stream_id, frame = self._conn.request(service, method, payload, timeout_ns=timeout_ns,
                                              metadata=metadata)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._calls[stream_id] = answer
        try:
            async with asyncio.timeout(timeout):
                await self._stream.write(frame)
                return await answer
        except TimeoutError:
            raise TtrpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"{service}/{method}: no answer within {timeout}s") from None
        except ConnectionError as exc:
            raise ConnectionClosed(f"ttrpc: closed ({exc})") from exc
        finally:
            self._calls.pop(stream_id, None)
            self._conn.forget(stream_id)
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled():
                answer.exception()  # marks it retrieved: a failure that lost a race is not logged

    async def call_message(self, service: str, method: str, request: Message, response_type: type[M],
                           *, timeout: float | None = None) -> M:  # noqa: ASYNC109
        """``call`` with protobuf messages on both ends."""
        payload = await self.call(service, method, request.SerializeToString(), timeout=timeout)
        return parse(response_type, payload, grpc.StatusCode.INTERNAL,
                     f"{service}/{method}: undecodable {response_type.__name__}")

    def close(self) -> None:
        """End the connection; pending calls fail with ConnectionClosed."""
        self._stream.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read_loop(self) -> None:
        try:
            while data := await self._stream.read():
                self._settle(self._conn.receive_data(data))
        finally:
            self._closed.set()
            self._settle(self._conn.connection_lost())
            for answer in self._calls.values():  # calls still writing their request
                if not answer.done():
                    answer.set_exception(ConnectionClosed())
            self._stream.close()

    def _settle(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            answer = self._calls.get(outcome.stream_id)
            if answer is None or answer.done():
                continue
            if isinstance(outcome, Failed):
                answer.set_exception(outcome.error)
            else:
                answer.set_result(outcome.payload)
