"""The one server interceptor: readiness, request ids, logging, request parsing and
error -> status mapping.

Handlers raise CRIError subclasses and never call ``context.abort`` themselves (containerd's
errgrpc rule): this module is the only place that chooses a gRPC status code.

Requests are parsed here, not by grpc: grpc.aio calls a method's request_deserializer before
any handler or interceptor code runs, and a DecodeError from it becomes UNKNOWN plus an ERROR
with a traceback in the log, for every call. Anyone who can reach the socket could flood the
log that way. Parsed in the handler, garbage is INVALID_ARGUMENT and one debug line.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cri.encoded import passthrough
from cri.errors import CRIError

log = logging.getLogger("pycri.rpc")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_counter = itertools.count(1)


class RequestIdFilter(logging.Filter):
    """Puts the current RPC's request id on every log record emitted while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class CRIInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.ready = False  # flipped once start-up recovery has finished

    async def _fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException,
                    method: str) -> None:
        if isinstance(exc, CRIError):
            log.info("%s failed: %s: %s", method, exc.code.name, exc.message)
            await context.abort(exc.code, exc.message)
        log.exception("%s failed with an unexpected error", method)
        await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc}")

    async def _gate(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        request_id.set(f"{next(_counter):x}")
        if not self.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "pycri is starting: state recovery has not finished yet")
        log.debug("%s called", method)

    async def _parse(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
                     deserialize: Callable[[bytes], Any] | None, raw: Any) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except DecodeError as exc:
            # Debug only: the client is told, and the node's log is not the client's to fill.
            log.debug("%s: the request does not parse: %s", method, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{method}: the request is not a valid protobuf message")

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = _short(handler_call_details.method)
        parse = handler.request_deserializer
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await self._gate(context, method)
                request = await self._parse(context, method, parse, raw)
                start = time.perf_counter()
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(context, exc, method)
                finally:
                    log.debug("%s done in %.1f ms", method, (time.perf_counter() - start) * 1e3)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=None,  # raw bytes: parsed by _parse
                response_serializer=passthrough(handler.response_serializer),
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(raw: Any, context: grpc.aio.ServicerContext[Any, Any]
                             ) -> AsyncIterator[Any]:
                await self._gate(context, method)
                request = await self._parse(context, method, parse, raw)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=None,  # raw bytes: parsed by _parse
                response_serializer=handler.response_serializer,
            )
        return handler
