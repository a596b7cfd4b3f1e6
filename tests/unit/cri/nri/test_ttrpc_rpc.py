"""ttrpc client and server drivers talking over a socketpair, plain and through NRI's multiplexer.

The NRI layout: on one trunk, the runtime is a ttrpc client on connection 1 (the plugin serves
nri.pkg.api.v1alpha1.Plugin there) and a ttrpc server on connection 2 (it serves
nri.pkg.api.v1alpha1.Runtime, which the plugin calls to register).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest

from cri.nri.api import api_pb2 as nri
from cri.nri.mux import Mux
from cri.nri.mux_frames import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN
from cri.nri.transport import SocketStream
from cri.nri.ttrpc_client import TtrpcClient
from cri.nri.ttrpc_frames import MAX_MESSAGE_LENGTH
from cri.nri.ttrpc_server import TtrpcServer, unary
from cri.nri.ttrpc_status import ConnectionClosed, TtrpcError
from tests.unit.cri.nri.aio import run

RUNTIME = nri.DESCRIPTOR.services_by_name["Runtime"].full_name
PLUGIN = nri.DESCRIPTOR.services_by_name["Plugin"].full_name


async def socket_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                 asyncio.StreamReader, asyncio.StreamWriter]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    return ra, wa, rb, wb


@dataclass
class Side:
    """One end of an NRI trunk: a client on one logical connection, a server on the other."""

    mux: Mux
    client: TtrpcClient
    serving: asyncio.Task[None]


def _side(mux: Mux, server: TtrpcServer, client_conn: int, server_conn: int) -> Side:
    client_stream, server_stream = mux.open(client_conn), mux.open(server_conn)
    mux.start()
    return Side(mux, TtrpcClient(client_stream), asyncio.create_task(server.serve(server_stream)))


@asynccontextmanager
async def nri_trunk(runtime_server: TtrpcServer,
                    plugin_server: TtrpcServer) -> AsyncIterator[tuple[Side, Side]]:
    ra, wa, rb, wb = await socket_pair()
    runtime = _side(Mux(ra, wa), runtime_server, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN)
    plugin = _side(Mux(rb, wb), plugin_server, RUNTIME_SERVICE_CONN, PLUGIN_SERVICE_CONN)
    try:
        yield runtime, plugin
    finally:
        for side in (runtime, plugin):
            side.mux.close()
        for side in (runtime, plugin):
            await side.mux.wait_closed()
            await side.client.wait_closed()
            await side.serving



def test_register_then_configure_over_the_mux() -> None:
    async def scenario() -> None:
        registered: list[nri.RegisterPluginRequest] = []
        configured: list[nri.ConfigureRequest] = []

        async def register_plugin(req: nri.RegisterPluginRequest) -> nri.Empty:
            registered.append(req)
            return nri.Empty()

        async def configure(req: nri.ConfigureRequest) -> nri.ConfigureResponse:
            configured.append(req)
            mask = (1 << (nri.CREATE_CONTAINER - 1)) | (1 << (nri.START_CONTAINER - 1))
            return nri.ConfigureResponse(events=mask)

        runtime_server, plugin_server = TtrpcServer(), TtrpcServer()
        runtime_server.register(RUNTIME, "RegisterPlugin", unary(nri.RegisterPluginRequest, register_plugin))
        plugin_server.register(PLUGIN, "Configure", unary(nri.ConfigureRequest, configure))
        async with nri_trunk(runtime_server, plugin_server) as (runtime, plugin):
            reply = await plugin.client.call_message(
                RUNTIME, "RegisterPlugin",
                nri.RegisterPluginRequest(plugin_name="logger", plugin_idx="10", NRI_version="v0.12.2"),
                nri.Empty, timeout=5)
            assert reply == nri.Empty()
            assert [(r.plugin_name, r.plugin_idx, r.NRI_version) for r in registered] == [
                ("logger", "10", "v0.12.2")]
            response = await runtime.client.call_message(
                PLUGIN, "Configure",
                nri.ConfigureRequest(config="x: 1", runtime_name="pycri", runtime_version="0.1.0",
                                     registration_timeout=5000, request_timeout=2000),
                nri.ConfigureResponse, timeout=5)
            assert response.events == 0b101000  # CREATE_CONTAINER (4) and START_CONTAINER (6)
            assert (configured[0].runtime_name, configured[0].request_timeout) == ("pycri", 2000)

    run(scenario)


def test_errors_carry_their_status_code() -> None:
    async def scenario() -> None:
        async def not_found(payload: bytes) -> bytes:
            raise TtrpcError(grpc.StatusCode.NOT_FOUND, "no such container")

        async def crash(payload: bytes) -> bytes:
            raise RuntimeError("handler bug")

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "StopContainer", not_found)
        plugin_server.register(PLUGIN, "Synchronize", crash)
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, _):
            cases = [(PLUGIN, "StopContainer", grpc.StatusCode.NOT_FOUND, "no such container"),
                     (PLUGIN, "Synchronize", grpc.StatusCode.UNKNOWN, "handler bug"),
                     (PLUGIN, "Shutdown", grpc.StatusCode.UNIMPLEMENTED, "method Shutdown"),
                     ("nope.Service", "X", grpc.StatusCode.UNIMPLEMENTED, "service nope.Service")]
            for service, method, code, message in cases:
                with pytest.raises(TtrpcError) as err:
                    await runtime.client.call(service, method, b"", timeout=5)
                assert (err.value.code, err.value.message) == (code, message)
            # The server took none of it to heart.
            with pytest.raises(TtrpcError, match="no such container"):
                await runtime.client.call(PLUGIN, "StopContainer", b"", timeout=5)

    run(scenario)


def test_undecodable_request_message_is_invalid_argument() -> None:
    async def scenario() -> None:
        async def configure(req: nri.ConfigureRequest) -> nri.ConfigureResponse:
            return nri.ConfigureResponse()

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "Configure", unary(nri.ConfigureRequest, configure))
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, _):
            with pytest.raises(TtrpcError) as err:
                await runtime.client.call(PLUGIN, "Configure", b"\x0a\xff", timeout=5)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT

    run(scenario)


def test_concurrent_calls_answered_out_of_order() -> None:
    async def scenario() -> None:
        gates = {b"a": asyncio.Event(), b"b": asyncio.Event()}

        async def echo(payload: bytes) -> bytes:
            await gates[payload].wait()
            return payload.upper()

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "StateChange", echo)
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, _):
            first = asyncio.create_task(runtime.client.call(PLUGIN, "StateChange", b"a", timeout=5))
            second = asyncio.create_task(runtime.client.call(PLUGIN, "StateChange", b"b", timeout=5))
            gates[b"b"].set()
            assert await second == b"B"
            assert not first.done()
            gates[b"a"].set()
            assert await first == b"A"

    run(scenario)


def test_large_messages_cross_the_mux_both_ways() -> None:
    async def scenario() -> None:
        async def reverse(payload: bytes) -> bytes:
            return payload[::-1]

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "Synchronize", reverse)
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, _):
            for size in (4095, 4096, 100_000, MAX_MESSAGE_LENGTH - 200):
                payload = bytes(range(256)) * (size // 256) + b"\7" * (size % 256)
                assert await runtime.client.call(PLUGIN, "Synchronize", payload, timeout=10) == payload[::-1]
            with pytest.raises(TtrpcError) as err:
                await runtime.client.call(PLUGIN, "Synchronize", b"x" * MAX_MESSAGE_LENGTH, timeout=5)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(scenario)


def test_a_hanging_handler_times_out_and_the_connection_stays_usable() -> None:
    async def scenario() -> None:
        cancelled = asyncio.Event()

        async def hang(payload: bytes) -> bytes:
            if payload == b"quick":
                return b"done"
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "CreateContainer", hang)
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, _):
            with pytest.raises(TtrpcError) as err:
                await runtime.client.call(PLUGIN, "CreateContainer", b"slow", timeout=0.05)
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server gave up too: the client's deadline travelled in timeout_nano.
            await cancelled.wait()
            assert await runtime.client.call(PLUGIN, "CreateContainer", b"quick", timeout=5) == b"done"

    run(scenario)


def test_peer_going_away_fails_pending_calls() -> None:
    async def scenario() -> None:
        entered = asyncio.Event()

        async def hang(payload: bytes) -> bytes:
            entered.set()
            await asyncio.Event().wait()
            return b""

        plugin_server = TtrpcServer()
        plugin_server.register(PLUGIN, "RunPodSandbox", hang)
        async with nri_trunk(TtrpcServer(), plugin_server) as (runtime, plugin):
            call = asyncio.create_task(runtime.client.call(PLUGIN, "RunPodSandbox", b""))
            await entered.wait()
            plugin.mux.close()
            with pytest.raises(ConnectionClosed) as err:
                await call
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            await runtime.client.wait_closed()
            assert runtime.client.closed
            with pytest.raises(ConnectionClosed):
                await runtime.client.call(PLUGIN, "RunPodSandbox", b"")
            await plugin.serving  # the plugin's server wound down and cancelled its handler

    run(scenario)


def test_plain_unix_socket_without_mux() -> None:
    async def scenario() -> None:
        async def register_plugin(req: nri.RegisterPluginRequest) -> nri.Empty:
            assert req.plugin_name == "plain"
            return nri.Empty()

        server = TtrpcServer()
        server.register(RUNTIME, "RegisterPlugin", unary(nri.RegisterPluginRequest, register_plugin))
        ra, wa, rb, wb = await socket_pair()
        serving = asyncio.create_task(server.serve(SocketStream(ra, wa)))
        client = TtrpcClient(SocketStream(rb, wb))
        request = nri.RegisterPluginRequest(plugin_name="plain")
        reply = await client.call_message(RUNTIME, "RegisterPlugin", request, nri.Empty, timeout=5)
        assert reply == nri.Empty()
        client.close()
        await client.wait_closed()
        await serving  # EOF ends the server's loop

    run(scenario)


def test_registering_a_method_twice_is_refused() -> None:
    async def handler(payload: bytes) -> bytes:
        return payload

    server = TtrpcServer()
    server.register(PLUGIN, "Configure", handler)
    with pytest.raises(ValueError, match="already registered"):
        server.register(PLUGIN, "Configure", handler)
