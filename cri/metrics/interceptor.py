"""Counts and times every CRI call by method and status code.

The outermost interceptor, so it sees the code the client gets, whoever chose it: the handler's
error through cri/interceptor.py, INVALID_ARGUMENT for a request that does not parse,
UNAVAILABLE before recovery is done. It wraps that interceptor's handler and reads the code
back from the call's context after an abort, changing nothing about the call.

Methods the server does not have never reach here (grpc answers UNIMPLEMENTED before any
interceptor's handler runs): a client cannot mint label values by calling made-up names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # grpc's classes take type arguments only in its stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class RPCObserver(Protocol):
    def rpc_done(self, method: str, code: grpc.StatusCode, seconds: float) -> None: ...


def _code(context: Ctx, exc: BaseException | None) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # grpc cancels the handler both when the client leaves and when the call's deadline
        # passes; the client saw DEADLINE_EXCEEDED in the second case.
        left = context.time_remaining()
        if left is not None and left <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    # Not set: a normal return is OK; an exception nobody mapped is grpc's UNKNOWN.
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, observer: RPCObserver) -> None:
        self._observer = observer

    def _done(self, method: str, context: Ctx, exc: BaseException | None, start: float) -> None:
        self._observer.rpc_done(method, _code(context, exc), time.perf_counter() - start)

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        done = self._done
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(request: Any, context: Ctx) -> Any:
                start = time.perf_counter()
                try:
                    reply = await inner(request, context)
                except BaseException as exc:
                    done(method, context, exc, start)
                    raise
                done(method, context, None, start)
                return reply

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:  # GeneratorExit too: the client went away
                    done(method, context, exc, start)
                    raise
                done(method, context, None, start)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # the CRI has no client-streaming methods
