"""An asyncio ttrpc server: unary handlers by service and method name, served on a MessageStream.

A handler takes the request payload and returns the response payload; ``unary`` wraps one that
works on protobuf messages. Each request runs in its own task, bounded by the timeout the client
sent. What a handler raises becomes the status of its answer and never reaches the server: a
TtrpcError keeps its code, a timeout is DEADLINE_EXCEEDED, anything else UNKNOWN (as Go ttrpc
maps errors it does not know). Unknown services and methods are UNIMPLEMENTED. When the client
goes away, the handlers still running are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cri.nri.transport import MessageStream
from cri.nri.ttrpc_server_proto import RequestReceived, ServerConnection
from cri.nri.ttrpc_status import TtrpcError, parse

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[bytes]]
Req = TypeVar("Req", bound=Message)


def unary(request_type: type[Req], handler: Callable[[Req], Awaitable[Message]]) -> Handler:
    """A Handler that decodes the request as ``request_type`` and encodes what ``handler`` returns."""

    async def handle(payload: bytes) -> bytes:
        request = parse(request_type, payload, grpc.StatusCode.INVALID_ARGUMENT,
                        f"undecodable {request_type.__name__}")
        return (await handler(request)).SerializeToString()

    return handle


class TtrpcServer:
    def __init__(self) -> None:
        self._handlers: dict[str, dict[str, Handler]] = {}

    def register(self, service: str, method: str, handler: Handler) -> None:
        methods = self._handlers.setdefault(service, {})
        if method in methods:
            raise ValueError(f"{service}/{method} is already registered")
        methods[method] = handler

    async def serve(self, stream: MessageStream) -> None:
        """Answer requests until the client goes away (or the stream is closed)."""
        conn = ServerConnection()
        running: set[asyncio.Task[None]] = set()
        try:
            while data := await stream.read():
                for request in conn.receive_data(data):
                    handler = self._lookup(conn, request)
                    if handler is not None:
                        task = asyncio.create_task(self._run(conn, stream, request, handler),
                                                   name=f"ttrpc {request.service}/{request.method}")
                        running.add(task)
                        task.add_done_callback(running.discard)
                await _flush(conn, stream)
            log.debug("ttrpc connection ended: %s", conn.connection_lost())
        except ConnectionError as exc:
            log.debug("ttrpc connection failed: %s", exc)
        finally:
            stream.close()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _lookup(self, conn: ServerConnection, request: RequestReceived) -> Handler | None:
        methods = self._handlers.get(request.service)
        if methods is None:
            conn.respond_error(request.stream_id, TtrpcError(grpc.StatusCode.UNIMPLEMENTED,
                                                             f"service {request.service}"))
            return None
        handler = methods.get(request.method)
        if handler is None:
            conn.respond_error(request.stream_id, TtrpcError(grpc.StatusCode.UNIMPLEMENTED,
                                                             f"method {request.method}"))
        return handler

    async def _run(self, conn: ServerConnection, stream: MessageStream, request: RequestReceived,
                   handler: Handler) -> None:
        timeout = request.timeout_ns / 1e9 if request.timeout_ns > 0 else None
        try:
            async with asyncio.timeout(timeout):
                reply = await handler(request.payload)
        except TimeoutError:
            conn.respond_error(request.stream_id, TtrpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{request.method}: deadline of {timeout}s exceeded"))
        except TtrpcError as exc:
            conn.respond_error(request.stream_id, exc)
        except Exception as exc:
            log.exception("ttrpc handler %s/%s failed", request.service, request.method)
            conn.respond_error(request.stream_id, TtrpcError(grpc.StatusCode.UNKNOWN, str(exc)))
        else:
            conn.respond(request.stream_id, reply)
        with contextlib.suppress(ConnectionError):  # the client is gone; serve() winds down
            await _flush(conn, stream)


async def _flush(conn: ServerConnection, stream: MessageStream) -> None:
    for frame in conn.frames_to_send():
        await stream.write(frame)
