"""The streaming server's HTTP side: tokens, routing, upgrade negotiation, sessions, cleanup.

Real sockets on 127.0.0.1; clients are written by hand (raw HTTP) or with wsproto's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
import wsproto
import wsproto.connection
import wsproto.events

from cri.streaming.server import (
    IdleDeadline,
    Session,
    StreamHandler,
    StreamServer,
    negotiate_client_order,
    tls_context,
    websocket_accept,
)
from cri.streaming.tokens import TokenStore

CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "base64.channel.k8s.io", "channel.k8s.io", "")
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # its answer, as printed in the RFC
GUARD = 30.0  # only keeps a broken test from hanging; nothing is expected to come near it


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(GUARD):
            await main()
    asyncio.run(guarded())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# TokenStore -------------------------------------------------------------------------------------

def test_tokens_are_url_safe_random_and_single_use() -> None:
    store = TokenStore(ttl=60)
    request = object()
    tokens = {store.issue(request) for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) >= 43
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    token = tokens.pop()
    assert store.take(token) is request
    assert store.take(token) is None
    assert store.take("never-issued") is None


def test_tokens_expire_after_the_ttl() -> None:
    clock = FakeClock()
    store = TokenStore(ttl=60, clock=clock)
    early, late = store.issue("early"), store.issue("late")
    clock.now += 59.9
    assert store.take(early) == "early"
    clock.now += 0.1
    assert store.take(late) is None


def test_expired_tokens_are_pruned_without_being_taken() -> None:
    clock = FakeClock()
    store = TokenStore(ttl=60, clock=clock)
    for i in range(50):
        store.issue(i)
    clock.now += 61
    fresh = store.issue("fresh")
    assert len(store) == 1
    assert store.take(fresh) == "fresh"


def test_token_store_drops_the_oldest_beyond_its_cap() -> None:
    store = TokenStore(ttl=60, max_size=3)
    tokens = [store.issue(i) for i in range(5)]
    assert len(store) == 3
    assert [store.take(t) for t in tokens] == [None, None, 2, 3, 4]


def test_a_token_is_bound_to_its_kind_and_spent_by_any_use() -> None:
    store = TokenStore(ttl=60)
    token = store.issue("pf", "portforward")
    assert store.pending(token, "portforward")
    assert not store.pending(token, "exec")
    assert store.take(token, "exec") is None
    assert store.take(token, "portforward") is None  # the wrong-kind attempt burnt it


def test_token_store_rejects_a_nonpositive_ttl() -> None:
    with pytest.raises(ValueError):
        TokenStore(ttl=0)


# IdleDeadline ------------------------------------------------------------------------------------

class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """A loop clock that moves only when told; runs due timers like asyncio does."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance_to(self, now: float) -> None:
        self.now = now
        while due := [t for t in self.timers if t.when <= now and not t.cancelled]:
            for timer in due:
                self.timers.remove(timer)
                timer.callback()


def test_idle_deadline_fires_a_timeout_after_the_last_touch_with_one_timer() -> None:
    sched = FakeScheduler()
    fired: list[float] = []
    idle = IdleDeadline(sched, 10, lambda: fired.append(sched.now))
    for step in range(1, 1001):  # 1000 touches, the last at t=7.8125 (exact in binary)
        sched.now = step / 128
        idle.touch()
    assert len(sched.timers) == 1  # touching armed nothing
    sched.advance_to(10)
    assert fired == [] and not idle.expired
    sched.advance_to(17.8)
    assert fired == []
    sched.advance_to(17.8125)
    assert fired == [17.8125] and idle.expired
    sched.advance_to(100)
    assert fired == [17.8125]  # once


def test_a_cancelled_idle_deadline_never_fires() -> None:
    sched = FakeScheduler()
    fired: list[float] = []
    idle = IdleDeadline(sched, 1, lambda: fired.append(sched.now))
    idle.cancel()
    sched.advance_to(5)
    assert fired == [] and not idle.expired


def test_negotiation_follows_the_clients_order() -> None:
    assert negotiate_client_order(["x", "v3.channel.k8s.io", "v4.channel.k8s.io"],
                                  CHANNEL_PROTOCOLS) == "v3.channel.k8s.io"
    assert negotiate_client_order(["x"], CHANNEL_PROTOCOLS) is None


def test_websocket_accept_matches_the_rfc_example() -> None:
    assert websocket_accept(RFC_KEY) == RFC_ACCEPT


# Helpers for the socket tests -------------------------------------------------------------------

class Recorder:
    """A handler that records its sessions and runs ``body`` for each."""

    def __init__(self, body: Callable[[Session], Awaitable[None]] | None = None) -> None:
        self.sessions: list[Session] = []
        self.outcomes: list[str] = []
        self.started = asyncio.Event()
        self._body = body

    async def __call__(self, session: Session) -> None:
        self.sessions.append(session)
        self.started.set()
        try:
            if self._body is not None:
                await self._body(session)
        except asyncio.CancelledError:
            self.outcomes.append("cancelled")
            raise
        self.outcomes.append("returned")


def handlers(recorder: Recorder) -> dict[str, StreamHandler]:
    return {
        "exec": StreamHandler(recorder, CHANNEL_PROTOCOLS, WS_PROTOCOLS),
        "attach": StreamHandler(recorder, CHANNEL_PROTOCOLS, WS_PROTOCOLS),
        "portforward": StreamHandler(recorder, ("portforward.k8s.io",),
                                     ("SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io")),
    }


def request_bytes(method: str, target: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def spdy_headers(*protocols: str) -> list[tuple[str, str]]:
    return [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
            *((("X-Stream-Protocol-Version", p)) for p in protocols)]


def ws_headers(key: str = RFC_KEY, protocols: str | None = "v5.channel.k8s.io, v4.channel.k8s.io",
               version: str = "13") -> list[tuple[str, str]]:
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", key),
               ("Sec-WebSocket-Version", version)]
    if protocols is not None:
        headers.append(("Sec-WebSocket-Protocol", protocols))
    return headers


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.status, self.headers, self.reader, self.writer = status, headers, reader, writer

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    async def rest(self) -> bytes:
        """Everything up to EOF: proves the server closed the connection."""
        data = await self.reader.read()
        await self.close()
        return data

    async def close(self) -> None:
        await close_client(self.writer)


async def send(server: StreamServer, data: bytes, ssl_context: ssl.SSLContext | None = None) -> Reply:
    host_port = server.base_url.split("://")[1]
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ssl_context)
    writer.write(data)  # one write: anything behind the request arrives with it
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in head[1:] if line)]
    return Reply(status, headers, reader, writer)


def path_of(url: str) -> str:
    return "/" + url.split("://")[1].split("/", 1)[1]


async def hangup(reader: asyncio.StreamReader) -> bool:
    """Whether the server ended the connection (EOF, or a reset when it aborted)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def close_client(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionResetError):  # the server may have aborted first
        await writer.wait_closed()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(server: StreamServer, remaining: int = 0) -> None:
    """Connection tasks finish a few loop iterations after their client saw EOF."""
    for _ in range(1000):
        if server.connections == remaining:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{server.connections} connections open, expected {remaining}")


# Routing and tokens over sockets ----------------------------------------------------------------

def test_unknown_paths_and_tokens_get_404_and_nothing_runs() -> None:
    async def main() -> None:
        rec = Recorder()
        clock = FakeClock()
        tokens = TokenStore(ttl=60, clock=clock)
        async with StreamServer("127.0.0.1", 0, tokens, handlers(rec)) as server:
            used = server.issue("exec", "used")
            reply = await send(server, request_bytes("POST", path_of(used), spdy_headers(*CHANNEL_PROTOCOLS)))
            assert reply.status == 101
            await reply.close()
            expired = server.issue("exec", "expired")
            clock.now += 61
            wrong_kind = server.issue("portforward", "pf")
            targets = ["/", "/exec", "/exec/", "/logs/abc", "/exec/abc/extra", "/exec/no-such-token",
                       "/exec/%2e%2e", path_of(used), path_of(expired),
                       path_of(wrong_kind).replace("/portforward/", "/exec/")]
            for target in targets:
                reply = await send(server, request_bytes("POST", target, spdy_headers(*CHANNEL_PROTOCOLS)))
                assert reply.status == 404, target
                assert await reply.rest() in (b"not found\n", b"unknown or expired token\n")
            assert len(rec.sessions) == 1  # only the first, valid request
            assert tokens.take(wrong_kind.rsplit("/", 1)[1], "portforward") is None  # spent by the try
    run(main)


def test_other_methods_get_405_without_spending_the_token() -> None:
    async def main() -> None:
        rec = Recorder()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            url = server.issue("attach", "req")
            reply = await send(server, request_bytes("PUT", path_of(url), spdy_headers(*CHANNEL_PROTOCOLS)))
            assert reply.status == 405 and reply.get("Allow") == ["GET, POST"]
            await reply.rest()
            reply = await send(server, request_bytes("GET", path_of(url), spdy_headers(*CHANNEL_PROTOCOLS)))
            assert reply.status == 101
            await reply.close()
    run(main)


def test_a_malformed_request_gets_400() -> None:
    async def main() -> None:
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(Recorder())) as server:
            reply = await send(server, b"NOT AN HTTP REQUEST\r\n\r\n")
            assert reply.status == 400
            await reply.rest()
    run(main)


def test_url_and_issue() -> None:
    async def main() -> None:
        tokens = TokenStore(60)
        server = StreamServer("127.0.0.1", 0, tokens, handlers(Recorder()))
        await server.start()
        try:
            host, port = server.base_url.removeprefix("http://").split(":")
            assert host == "127.0.0.1" and int(port) > 0
            token = tokens.issue("r", "portforward")
            assert server.url("portforward", token) == f"{server.base_url}/portforward/{token}"
            with pytest.raises(ValueError):
                server.url("exec", token)  # issued for another kind: it could never work
            with pytest.raises(ValueError):
                server.url("logs", token)
            url = server.issue("exec", "r2")
            assert url.startswith(f"{server.base_url}/exec/")
            assert tokens.take(url.rsplit("/", 1)[1], "exec") == "r2"
        finally:
            await server.close()
    run(main)


# SPDY upgrade ---------------------------------------------------------------------------------

def test_spdy_upgrade_picks_the_clients_first_supported_protocol() -> None:
    async def main() -> None:
        rec = Recorder()
        request = object()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            url = server.issue("exec", request)
            headers = [("Connection", "keep-alive, Upgrade"), ("Upgrade", "spdy/3.1"),
                       ("X-Stream-Protocol-Version", "v9.channel.k8s.io"),
                       ("X-Stream-Protocol-Version", "v3.channel.k8s.io, v4.channel.k8s.io")]
            reply = await send(server, request_bytes("POST", path_of(url) + "?command=sh&tty=1", headers))
            assert reply.status == 101
            assert reply.get("Connection") == ["Upgrade"]
            assert reply.get("Upgrade") == ["SPDY/3.1"]
            assert reply.get("X-Stream-Protocol-Version") == ["v3.channel.k8s.io"]
            await rec.started.wait()
            session = rec.sessions[0]
            assert (session.kind, session.transport, session.protocol, session.query) == (
                "exec", "spdy", "v3.channel.k8s.io", "command=sh&tty=1")
            assert session.request is request
            await reply.close()
    run(main)


def test_spdy_without_a_common_protocol_is_refused() -> None:
    async def main() -> None:
        rec = Recorder()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            reply = await send(server, request_bytes(
                "POST", path_of(server.issue("portforward", 1)), spdy_headers("v4.channel.k8s.io")))
            assert reply.status == 403
            assert reply.get("X-Accepted-Stream-Protocol-Versions") == ["portforward.k8s.io"]
            assert b"portforward.k8s.io" in await reply.rest()
            reply = await send(server, request_bytes("POST", path_of(server.issue("exec", 2)),
                                                     spdy_headers()))
            assert reply.status == 400
            assert b"X-Stream-Protocol-Version" in await reply.rest()
            reply = await send(server, request_bytes("POST", path_of(server.issue("exec", 3)),
                                                     [("Connection", "Upgrade"), ("Upgrade", "h2c")]))
            assert reply.status == 400
            await reply.rest()
            reply = await send(server, request_bytes("POST", path_of(server.issue("exec", 4))))
            assert reply.status == 400
            await reply.rest()
            assert rec.sessions == []
    run(main)


async def echo_with_prefix(session: Session) -> None:
    """Echo everything back with a marker, until EOF."""
    while data := await session.read():
        session.write(b"<" + data + b">")
        await session.drain()


def test_bytes_sent_with_the_request_reach_the_handler() -> None:
    async def main() -> None:
        got = bytearray()

        async def collect(session: Session) -> None:
            while len(got) < 11:
                got.extend(await session.read(4))  # small reads: the buffered bytes come in pieces
            session.write(bytes(got))
            await session.drain()
            await echo_with_prefix(session)

        rec = Recorder(collect)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            head = request_bytes("POST", path_of(server.issue("exec", 1)), spdy_headers("v4.channel.k8s.io"))
            reply = await send(server, head + b"\x80\x03\x00\x01early-bird"[:11])
            assert reply.status == 101
            assert await reply.reader.readexactly(11) == b"\x80\x03\x00\x01early-b"
            reply.writer.write(b"later")
            assert await reply.reader.readexactly(7) == b"<later>"
            reply.writer.write_eof()
            assert await reply.reader.read() == b""
            await reply.close()
            assert rec.outcomes == ["returned"]
    run(main)


# WebSocket upgrade ----------------------------------------------------------------------------

def test_websocket_handshake_answers_the_rfc_key_and_picks_a_subprotocol() -> None:
    async def main() -> None:
        rec = Recorder()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            reply = await send(server, request_bytes("GET", path_of(server.issue("attach", 1)),
                                                     ws_headers(protocols="v6.channel.k8s.io, "
                                                                "v4.channel.k8s.io, channel.k8s.io")))
            assert reply.status == 101
            assert [h.lower() for h in reply.get("Upgrade")] == ["websocket"]
            assert reply.get("Connection") == ["Upgrade"]
            assert reply.get("Sec-WebSocket-Accept") == [RFC_ACCEPT]
            assert reply.get("Sec-WebSocket-Protocol") == ["v4.channel.k8s.io"]
            await rec.started.wait()
            assert (rec.sessions[0].transport, rec.sessions[0].protocol) == ("websocket", "v4.channel.k8s.io")
            await reply.close()
    run(main)


def test_websocket_without_subprotocol_uses_the_legacy_one_if_supported() -> None:
    async def main() -> None:
        rec = Recorder()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            reply = await send(server, request_bytes("GET", path_of(server.issue("exec", 1)),
                                                     ws_headers(protocols=None)))
            assert reply.status == 101 and reply.get("Sec-WebSocket-Protocol") == []
            await reply.close()
            # port-forward does not list "": a client offering nothing is refused
            reply = await send(server, request_bytes("GET", path_of(server.issue("portforward", 2)),
                                                     ws_headers(protocols=None)))
            assert reply.status == 403
            await reply.rest()
    run(main)


@pytest.mark.parametrize("method,headers,status", [
    ("POST", ws_headers(), 405),
    ("GET", ws_headers(version="8"), 426),
    ("GET", ws_headers(key="short"), 400),
    ("GET", [*ws_headers(), ("Sec-WebSocket-Key", RFC_KEY)], 400),
    ("GET", ws_headers(protocols="v1.example"), 403),
])
def test_bad_websocket_handshakes_are_refused(method: str, headers: list[tuple[str, str]],
                                              status: int) -> None:
    async def main() -> None:
        rec = Recorder()
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            reply = await send(server, request_bytes(method, path_of(server.issue("exec", 1)), headers))
            assert reply.status == status
            if status == 426:
                assert reply.get("Sec-WebSocket-Version") == ["13"]
            await reply.rest()
            assert rec.sessions == []
    run(main)


def test_a_wsproto_client_talks_to_a_wsproto_session_after_our_handshake() -> None:
    async def ws_echo(session: Session) -> None:
        conn = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
        while True:
            data = await session.read()
            conn.receive_data(data or None)
            for event in conn.events():
                if isinstance(event, wsproto.events.BytesMessage):
                    session.write(conn.send(wsproto.events.BytesMessage(data=b"echo:" + bytes(event.data))))
                elif isinstance(event, wsproto.events.CloseConnection):
                    session.write(conn.send(event.response()))
                    await session.drain()
                    return
            await session.drain()
            if not data:
                return

    async def main() -> None:
        rec = Recorder(ws_echo)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            host, port = server.base_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            writer.write(client.send(wsproto.events.Request(
                host=host, target=path_of(server.issue("portforward", 1)),
                subprotocols=["SPDY/3.1+portforward.k8s.io", "portforward.k8s.io"])))
            accepted: list[str | None] = []
            while not accepted:
                client.receive_data(await reader.read(4096))
                for event in client.events():
                    assert isinstance(event, wsproto.events.AcceptConnection), event
                    accepted.append(event.subprotocol)
            assert accepted == ["SPDY/3.1+portforward.k8s.io"]
            writer.write(client.send(wsproto.events.BytesMessage(data=b"\x00ping")))
            received: list[bytes] = []
            while not received:
                client.receive_data(await reader.read(4096))
                received += [bytes(e.data) for e in client.events()
                             if isinstance(e, wsproto.events.BytesMessage)]
            assert received == [b"echo:\x00ping"]
            writer.write(client.send(wsproto.events.CloseConnection(code=1000)))
            assert await reader.read() != b""  # the close frame, then EOF
            writer.close()
            await writer.wait_closed()
            assert rec.outcomes == ["returned"]
    run(main)


# Sessions: idle timeout, isolation, shutdown ---------------------------------------------------

def test_a_silent_session_is_closed_by_the_idle_timeout() -> None:
    async def wait_for_client(session: Session) -> None:
        await session.read()

    async def main() -> None:
        rec = Recorder(wait_for_client)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec),
                                idle_timeout=0.05) as server:
            reply = await send(server, request_bytes("GET", path_of(server.issue("exec", 1)),
                                                     spdy_headers("v4.channel.k8s.io")))
            assert reply.status == 101
            assert await reply.reader.read() == b""  # the server hung up on its own
            await reply.close()
            assert rec.outcomes == ["cancelled"]
            assert rec.sessions[0].closed
    run(main)


def test_reads_and_writes_both_count_as_activity() -> None:
    sched = FakeScheduler()
    expired: list[bool] = []

    async def steered(session: Session) -> None:
        assert session.idle is not None
        session.idle.cancel()  # swap the real deadline for one on the fake clock
        session.idle = IdleDeadline(sched, 10, lambda: expired.append(True))
        sched.advance_to(5)
        assert await session.read(1) == b"x"  # touch at 5
        sched.advance_to(14)
        session.write(b"y")  # touch at 14
        await session.drain()
        sched.advance_to(23.9)
        assert expired == []
        sched.advance_to(24)
        assert expired == [True]

    async def main() -> None:
        rec = Recorder(steered)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            reply = await send(server, request_bytes("GET", path_of(server.issue("exec", 1)),
                                                     spdy_headers("v4.channel.k8s.io")) + b"x")
            assert await reply.reader.read() == b"y"
            await reply.close()
            assert rec.outcomes == ["returned"]
    run(main)


def test_a_client_that_stops_reading_blocks_only_its_own_session() -> None:
    async def main() -> None:
        flood_done = asyncio.Event()

        async def flood_or_echo(session: Session) -> None:
            if session.request == "flood":
                chunk = b"x" * 65536
                for _ in range(1024):  # 64 MiB: far beyond any socket buffer
                    session.write(chunk)
                    await session.drain()
                flood_done.set()
            else:
                await echo_with_prefix(session)

        rec = Recorder(flood_or_echo)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            stuck = await send(server, request_bytes("GET", path_of(server.issue("exec", "flood")),
                                                     spdy_headers("v4.channel.k8s.io")))
            assert stuck.status == 101
            await rec.started.wait()
            for i in range(3):
                reply = await send(server, request_bytes("GET", path_of(server.issue("attach", i)),
                                                         spdy_headers("v4.channel.k8s.io")))
                reply.writer.write(b"hi")
                assert await reply.reader.readexactly(4) == b"<hi>"
                await reply.close()
            await settle(server, 1)
            assert not flood_done.is_set()  # the flood is still parked in drain()
            await stuck.close()
    run(main)


def test_close_cancels_sessions_and_handshakes_and_stops_listening() -> None:
    async def hang(session: Session) -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        rec = Recorder(hang)
        server = StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec))
        await server.start()
        replies = []
        for i in range(3):
            replies.append(await send(server, request_bytes("GET", path_of(server.issue("exec", i)),
                                                            spdy_headers("v4.channel.k8s.io"))))
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /exec/abc HTTP/1.1\r\nHost: x\r\n")  # a request that never ends
        await writer.drain()
        await settle(server, 4)  # the half-sent request is being served too
        await server.close()
        assert rec.outcomes == ["cancelled"] * 3
        assert server.connections == 0
        # Shutdown aborts connections (nothing is flushed): EOF or a reset, never a hang.
        for reply in replies:
            assert await hangup(reply.reader)
            await reply.close()
        assert await hangup(reader)
        await close_client(writer)
        with pytest.raises(OSError):
            await asyncio.open_connection(host, int(port))
    run(main)


def test_handler_errors_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(session: Session) -> None:
        raise RuntimeError("handler bug")

    async def main() -> None:
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(Recorder(boom))) as server:
            for i in range(2):
                reply = await send(server, request_bytes("GET", path_of(server.issue("exec", i)),
                                                         spdy_headers("v4.channel.k8s.io")))
                assert reply.status == 101
                assert await reply.rest() == b""
    run(main)
    logged = [r for r in caplog.records if r.exc_info and "handler bug" in str(r.exc_info[1])]
    assert len(logged) == 2


def test_a_request_that_never_completes_is_dropped() -> None:
    async def main() -> None:
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(Recorder()),
                                handshake_timeout=0.05) as server:
            host, port = server.base_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /exec/abc HTTP/1.1\r\n")
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
    run(main)


def test_no_fd_or_task_leaks_after_1000_refused_and_200_dropped_sessions() -> None:
    async def main() -> None:
        rec = Recorder(echo_with_prefix)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec)) as server:
            fds, tasks = open_fds(), len(asyncio.all_tasks())

            async def refused(i: int) -> None:
                reply = await send(server, request_bytes("GET", f"/exec/bad-token-{i}",
                                                         spdy_headers("v4.channel.k8s.io")))
                assert reply.status == 404
                await reply.rest()

            async def dropped(i: int) -> None:
                reply = await send(server, request_bytes("GET", path_of(server.issue("exec", i)),
                                                         spdy_headers("v4.channel.k8s.io")) + b"a")
                assert await reply.reader.readexactly(3) == b"<a>"
                reply.writer.transport.abort()  # vanish mid-stream, no EOF handshake

            for start in range(0, 1000, 100):
                await asyncio.gather(*(refused(i) for i in range(start, start + 100)))
            for start in range(0, 200, 50):
                await asyncio.gather(*(dropped(i) for i in range(start, start + 50)))
            await settle(server)
            # No more than before (other code in the same process, e.g. an e2e session's
            # gRPC channels, may close fds of its own meanwhile).
            assert open_fds() <= fds
            assert len(asyncio.all_tasks()) == tasks
            assert rec.outcomes == ["returned"] * 200
    run(main)


# TLS --------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=pycri-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server_ctx = tls_context(str(cert), str(key))
    assert server_ctx is not None
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        rec = Recorder(echo_with_prefix)
        async with StreamServer("127.0.0.1", 0, TokenStore(60), handlers(rec),
                                ssl_context=server_ctx) as server:
            assert server.base_url.startswith("https://127.0.0.1:")
            reply = await send(server, request_bytes("POST", path_of(server.issue("exec", 1)),
                                                     spdy_headers("v4.channel.k8s.io")) + b"tls",
                               ssl_context=client_ctx)
            assert reply.status == 101
            assert await reply.reader.readexactly(5) == b"<tls>"
            await reply.close()
            reply = await send(server, request_bytes("GET", "/exec/nope"), ssl_context=client_ctx)
            assert reply.status == 404
            await reply.rest()
    run(main)
    assert tls_context("", "") is None
    with pytest.raises(ValueError):
        tls_context(str(cert), "")
