"""The interceptor: CRIError -> status code, anything else -> INTERNAL (and the server keeps
serving), UNAVAILABLE until ready, unimplemented RPCs name themselves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api import api_pb2, api_pb2_grpc
from cri.errors import FailedPrecondition, NotFound
from cri.interceptor import CRIInterceptor
from cri.runtime.unimplemented import fill_unimplemented


class Servicer(api_pb2_grpc.RuntimeServiceServicer):
    async def Version(self, request: Any, context: Any) -> api_pb2.VersionResponse:
        if request.version == "missing":
            raise NotFound("no such thing")
        if request.version == "boom":
            raise ZeroDivisionError("unexpected")
        return api_pb2.VersionResponse(runtime_name="ok")

    async def StreamPodSandboxes(self, request: Any, context: Any) -> Any:
        yield api_pb2.StreamPodSandboxesResponse()
        raise FailedPrecondition("half-way")


fill_unimplemented(Servicer, "RuntimeService")


@contextlib.asynccontextmanager
async def serving(sock: Path, servicer: api_pb2_grpc.RuntimeServiceServicer,
                  *interceptors: grpc.aio.ServerInterceptor) -> AsyncIterator[grpc.aio.Channel]:
    """A grpc.aio server of ``servicer`` on ``sock``, and a channel to it."""
    server = grpc.aio.server(interceptors=interceptors)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{sock}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            yield ch
    finally:
        await server.stop(None)


async def _scenario(sock: Path) -> None:
    interceptor = CRIInterceptor()
    async with serving(sock, Servicer(), interceptor) as ch:  # type: ignore[abstract]
        stub = api_pb2_grpc.RuntimeServiceStub(ch)

        async def code(version: str) -> grpc.StatusCode:
            try:
                await stub.Version(api_pb2.VersionRequest(version=version))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        assert await code("") == grpc.StatusCode.UNAVAILABLE
        interceptor.ready = True
        assert await code("") == grpc.StatusCode.OK
        assert await code("missing") == grpc.StatusCode.NOT_FOUND
        assert await code("boom") == grpc.StatusCode.INTERNAL
        assert await code("") == grpc.StatusCode.OK  # still serving
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListContainers(api_pb2.ListContainersRequest())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "ListContainers" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamPodSandboxes(api_pb2.StreamPodSandboxesRequest()):
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_interceptor_maps_errors_and_gates_readiness(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path / "s.sock"))
