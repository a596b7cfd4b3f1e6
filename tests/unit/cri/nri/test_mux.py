"""The asyncio multiplexer on one end of a socketpair; the other end speaks raw trunk bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from cri.nri.mux import Mux, MuxConnection

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def socket_pair() -> tuple[Streams, Streams]:
    a, b = socket.socketpair()
    return await asyncio.open_unix_connection(sock=a), await asyncio.open_unix_connection(sock=b)


async def read_exactly(conn: MuxConnection, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await conn.read()
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def run(scenario: Callable[[Mux, Streams], Awaitable[None]], conns: tuple[int, ...] = (1, 2),
        **kwargs: int) -> None:
    async def main() -> None:
        ours, peer = await socket_pair()
        mux = Mux(*ours, **kwargs)
        for conn_id in conns:
            mux.open(conn_id)
        mux.start()
        try:
            await asyncio.wait_for(scenario(mux, peer), 30)
        finally:
            mux.close()
            peer[1].close()
            await mux.wait_closed()

    asyncio.run(main())


def conn(mux: Mux, conn_id: int) -> MuxConnection:
    return mux._conns[conn_id]


def test_interleaved_frames_reach_their_connections() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        peer[1].write(bytes.fromhex(
            "00000001 00000003 616263"  # connection 1: "abc"
            "00000002 00000002 7879"    # connection 2: "xy"
            "00000001 00000001 64"))    # connection 1: "d"
        assert await read_exactly(conn(mux, 2), 2) == b"xy"
        assert await read_exactly(conn(mux, 1), 4) == b"abcd"

    run(scenario)


def test_frames_cut_anywhere_on_the_trunk() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        trunk = bytes.fromhex("00000002 00000005 68656c6c6f")
        for i in range(len(trunk)):
            peer[1].write(trunk[i:i + 1])
            await peer[1].drain()
            await asyncio.sleep(0)
        assert await read_exactly(conn(mux, 2), 5) == b"hello"

    run(scenario)


def test_writes_are_framed_per_connection() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        await conn(mux, 2).write(b"hello")
        assert await peer[0].readexactly(13) == bytes.fromhex("00000002 00000005 68656c6c6f")
        message = b"m" * 5000
        await conn(mux, 1).write(message)
        assert await peer[0].readexactly(8) == bytes.fromhex("00000001 00001000")
        assert await peer[0].readexactly(4096) == message[:4096]
        assert await peer[0].readexactly(8) == bytes.fromhex("00000001 00000388")  # 904
        assert await peer[0].readexactly(904) == message[4096:]

    run(scenario)


def test_unopened_connections_are_dropped() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        peer[1].write(bytes.fromhex("00000002 00000001 7a" "00000001 00000001 61"))
        assert await read_exactly(conn(mux, 1), 1) == b"a"

    run(scenario, conns=(1,))


def test_closing_one_connection_leaves_the_others() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        one = conn(mux, 1)
        one.close()
        assert await one.read() == b""
        with pytest.raises(ConnectionError):
            await one.write(b"x")
        peer[1].write(bytes.fromhex("00000001 00000001 61" "00000002 00000001 62"))
        assert await read_exactly(conn(mux, 2), 1) == b"b"
        await conn(mux, 2).write(b"c")
        assert await peer[0].readexactly(9) == bytes.fromhex("00000002 00000001 63")
        assert not mux.closed

    run(scenario)


def test_trunk_eof_ends_every_connection() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        one, two = conn(mux, 1), conn(mux, 2)
        peer[1].write(bytes.fromhex("00000001 00000001 61"))
        peer[1].close()
        assert await read_exactly(one, 1) == b"a"
        assert await one.read() == b""
        assert await two.read() == b""
        await mux.wait_closed()
        assert mux.error is None
        with pytest.raises(ConnectionError):
            await two.write(b"x")
        with pytest.raises(ConnectionError):
            mux.open(3)

    run(scenario)


def test_eof_inside_a_frame_is_reported() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        peer[1].write(bytes.fromhex("00000001 00000005 6162"))
        peer[1].close()
        assert await conn(mux, 1).read() == b""
        await mux.wait_closed()
        assert mux.error is not None and "inside a frame" in mux.error

    run(scenario)


def test_oversized_frame_ends_the_trunk() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        one = conn(mux, 1)
        peer[1].write(bytes.fromhex("00000001 0040000b"))  # 10 + 4 MiB + 1
        assert await one.read() == b""
        assert mux.error is not None and "exceeds" in mux.error

    run(scenario)


def test_a_connection_nobody_reads_cannot_grow_without_bound() -> None:
    async def scenario(mux: Mux, peer: Streams) -> None:
        one = conn(mux, 1)
        peer[1].write(bytes.fromhex("00000001 00000003 616263" "00000001 00000003 646566"))
        await mux.wait_closed()
        assert mux.error is not None and "unread bytes" in mux.error
        assert await one.read() == b"abcdef"  # what came in before the cut, then EOF
        assert await one.read() == b""

    run(scenario, max_buffered=4)
