"""Bytes that do not parse as the method's request: INVALID_ARGUMENT for every RPC of both
services, one debug line each, no ERROR and no traceback, and the server keeps answering."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2, api_pb2_grpc
from cri.interceptor import CRIInterceptor
from cri.runtime.unimplemented import fill_unimplemented
from tests.fixtures import garbage


class Runtime(api_pb2_grpc.RuntimeServiceServicer):
    async def Version(self, request: api_pb2.VersionRequest, context: object
                      ) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(runtime_name="ok")


class Image(api_pb2_grpc.ImageServiceServicer):
    pass


fill_unimplemented(Runtime, "RuntimeService")
fill_unimplemented(Image, "ImageService")


async def _scenario(sock: Path) -> dict[str, set[grpc.StatusCode]]:
    interceptor = CRIInterceptor()
    interceptor.ready = True
    server = grpc.aio.server(interceptors=[interceptor])
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(Runtime(), server)  # type: ignore[abstract]
    api_pb2_grpc.add_ImageServiceServicer_to_server(Image(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"unix://{sock}")
    await server.start()
    codes: dict[str, set[grpc.StatusCode]] = {}
    try:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            for method in garbage.methods():
                for body in method.bodies:
                    code = await garbage.send_aio(ch, method, body)
                    codes.setdefault(method.name, set()).add(code)
            reply = await api_pb2_grpc.RuntimeServiceStub(ch).Version(api_pb2.VersionRequest())
            assert reply.runtime_name == "ok"
    finally:
        await server.stop(None)
    return codes


def test_garbage_is_invalid_argument_and_logged_once_at_debug(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    codes = asyncio.run(_scenario(tmp_path / "s.sock"))

    every = {m.name for m in garbage.methods()}
    assert {"Version", "RunPodSandbox", "GetContainerEvents", "PullImage"} <= every
    assert codes == {name: {grpc.StatusCode.INVALID_ARGUMENT} for name in every}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info]
    refusals = [r for r in caplog.records if "does not parse" in r.getMessage()]
    sent = sum(len(m.bodies) for m in garbage.methods())
    assert len(refusals) == sent
    assert all(r.levelno == logging.DEBUG for r in refusals)
