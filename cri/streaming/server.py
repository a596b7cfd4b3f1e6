"""The HTTP/1.1 side of the streaming server: token URLs, upgrade negotiation, session hand-over.

kubectl (through the kubelet's proxy) and crictl reach exec, attach and port-forward at the URL
an RPC returned: ``/exec/<token>``, ``/attach/<token>``, ``/portforward/<token>``. This module
parses that one request with h11, spends the token, negotiates the upgrade (SPDY/3.1 with an
``X-Stream-Protocol-Version`` sub-protocol, or a WebSocket with ``Sec-WebSocket-Protocol``), answers
``101 Switching Protocols`` and hands the raw connection to the handler of that kind. Everything
after the 101 (SPDY frames, WebSocket frames, k8s channels) is the handler's business.

Each connection is its own task, so a slow or stuck client only ever stalls its own session.
The negotiation follows the kubelet's (k8s.io/streaming httpstream and wsstream): the first
protocol in the *client's* list that the server supports wins; SPDY without a protocol header
is a 400, no common protocol a 403 listing what the server accepts; a WebSocket client that
offers no protocol gets the legacy unnamed one if the handler supports ``""``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import h11

from cri.streaming.tokens import TokenStore

log = logging.getLogger(__name__)

KINDS = ("exec", "attach", "portforward")
Transport = Literal["spdy", "websocket"]
Negotiate = Callable[[Sequence[str], Sequence[str]], "str | None"]

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"
WEBSOCKET_VERSION = "13"
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

DEFAULT_IDLE_TIMEOUT = 4 * 3600.0  # the kubelet's default streaming idle timeout
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
READ_SIZE = 64 * 1024
MAX_REQUEST_HEAD = 16 * 1024  # a token URL plus a handful of headers; more is not a client of ours
CLOSE_GRACE = 5.0  # seconds a closing connection may take to flush before it is aborted
# What secrets.token_urlsafe produces; anything else cannot be a token, so it is not looked up.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def negotiate_client_order(offers: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first protocol the client offered that the server supports (the kubelet's rule)."""
    for offer in offers:
        if offer in supported:
            return offer
    return None


def websocket_accept(key: str) -> str:
    """The Sec-WebSocket-Accept value that proves the server read ``key`` (RFC 6455 4.2.2)."""
    # SHA-1 is what the RFC prescribes for this handshake token; it is not used for security.
    digest = hashlib.sha1(key.encode("ascii") + _WEBSOCKET_GUID).digest()  # noqa: S324
    return base64.b64encode(digest).decode("ascii")


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None for plain HTTP when both are empty."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("TLS needs both a certificate and a key file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class ByteStream(Protocol):
    """The upgraded connection as the SPDY / WebSocket layers see it."""

    async def read(self, n: int = READ_SIZE) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


class _Peer(Protocol):
    @property
    def closed(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


async def send(peer: _Peer, data: bytes) -> None:
    """Write ``data`` and wait until it drained; nothing when the client is already gone (the
    stream closed, or the connection reset while writing)."""
    if data and not peer.closed:
        with contextlib.suppress(ConnectionError):
            peer.write(data)
            await peer.drain()


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The two event-loop methods IdleDeadline needs (an asyncio loop, or a fake in tests)."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object]) -> _Cancellable: ...


class IdleDeadline:
    """Calls ``on_idle`` once when ``timeout`` seconds pass without a ``touch()``.

    ``touch()`` only stores a timestamp, so streaming bytes costs no timer operations. The single
    timer fires at the earliest possible expiry; if there was activity since, it re-arms for the
    new expiry. That is at most one wake-up per ``timeout`` per session, and no polling.
    """

    def __init__(self, scheduler: Scheduler, timeout: float, on_idle: Callable[[], None]) -> None:
        if timeout <= 0:
            raise ValueError("idle timeout must be positive")
        self._scheduler = scheduler
        self._timeout = timeout
        self._on_idle = on_idle
        self._last = scheduler.time()
        self._expired = False
        self._timer: _Cancellable | None = scheduler.call_at(self._last + timeout, self._check)

    @property
    def expired(self) -> bool:
        """True once ``on_idle`` has been called."""
        return self._expired

    def touch(self) -> None:
        self._last = self._scheduler.time()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        deadline = self._last + self._timeout
        if self._scheduler.time() >= deadline:
            self._timer = None
            self._expired = True
            self._on_idle()
        else:
            self._timer = self._scheduler.call_at(deadline, self._check)


class Session:
    """One upgraded connection, handed to the handler of its kind.

    ``request`` is the object the RPC parked with the token. Reads return ``b""`` once the
    client is gone (EOF or reset); ``write``/``drain`` raise ConnectionError then. Every byte
    read or written counts as activity for the idle timeout.
    """

    def __init__(self, *, kind: str, request: object, transport: Transport, protocol: str,
                 query: str, headers: Sequence[tuple[str, str]], peer: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 buffered: bytes = b"") -> None:
        self.kind = kind
        self.request = request
        self.transport: Transport = transport
        self.protocol = protocol
        self.query = query
        self.headers = tuple(headers)
        self.peer = peer
        self._reader = reader
        self._writer = writer
        # Bytes the client sent right behind its request (h11's trailing data): they already
        # belong to the upgraded protocol, e.g. the first SPDY SYN_STREAM frames.
        self._buffered = buffered
        self._closed = False
        # Set by the server when an idle timeout is configured; touched by every read and write.
        self.idle: IdleDeadline | None = None

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.is_closing()

    async def read(self, n: int = READ_SIZE) -> bytes:
        if n <= 0:
            raise ValueError("read size must be positive")
        if self._buffered:
            data, self._buffered = self._buffered[:n], self._buffered[n:]
        elif self._closed:
            return b""
        else:
            try:
                data = await self._reader.read(n)
            except OSError:
                return b""  # a reset (or a broken TLS record) is the end of the stream for the handler
        if data and self.idle is not None:
            self.idle.touch()
        return data

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("streaming session is closed")
        if data:
            self._writer.write(data)
            if self.idle is not None:
                self.idle.touch()

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written (this session only)."""
        await self._writer.drain()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()


@dataclass(frozen=True)
class StreamHandler:
    """How one URL kind is served: the protocols it speaks per transport and the coroutine.

    ``spdy_protocols`` are matched against ``X-Stream-Protocol-Version``, ``websocket_protocols``
    against ``Sec-WebSocket-Protocol`` (include ``""`` to accept clients that offer none). An
    empty tuple refuses that transport. ``negotiate(offers, supported)`` picks one or None.
    """

    serve: Callable[[Session], Awaitable[None]]
    spdy_protocols: Sequence[str] = ()
    websocket_protocols: Sequence[str] = ()
    negotiate: Negotiate = negotiate_client_order


class _Reject(Exception):
    """Answer the request with this status and message, then close the connection."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class _Upgrade:
    transport: Transport
    protocol: str
    headers: list[tuple[str, str]]  # of the 101 reply


@dataclass(frozen=True)
class _Accepted:
    kind: str
    handler: StreamHandler
    request: object
    query: str
    headers: list[tuple[str, str]]  # of the client's request, names lower-cased
    upgrade: _Upgrade


def _header_tokens(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """All comma-separated values of a (possibly repeated) header, stripped, empties dropped."""
    return [part.strip() for key, value in headers if key == name
            for part in value.split(",") if part.strip()]


def _negotiate_spdy(headers: Sequence[tuple[str, str]], handler: StreamHandler) -> _Upgrade:
    offers = _header_tokens(headers, PROTOCOL_HEADER.lower())
    if not offers:
        raise _Reject(400, f"unable to upgrade: {PROTOCOL_HEADER} is required")
    chosen = handler.negotiate(offers, handler.spdy_protocols)
    if chosen is None:
        accepted = [(ACCEPTED_PROTOCOLS_HEADER, p) for p in handler.spdy_protocols]
        raise _Reject(403, f"unable to upgrade: no common protocol: client offers {offers}, "
                      f"server accepts {list(handler.spdy_protocols)}", accepted)
    reply = [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE)]
    if chosen:
        reply.append((PROTOCOL_HEADER, chosen))
    return _Upgrade("spdy", chosen, reply)


def _negotiate_websocket(method: str, headers: Sequence[tuple[str, str]],
                         handler: StreamHandler) -> _Upgrade:
    if method != "GET":  # RFC 6455 4.1: the opening handshake is a GET
        raise _Reject(405, "a WebSocket handshake must use GET", [("Allow", "GET")])
    versions = [v.strip() for k, v in headers if k == "sec-websocket-version"]
    if versions != [WEBSOCKET_VERSION]:
        raise _Reject(426, "unsupported Sec-WebSocket-Version",
                      [("Sec-WebSocket-Version", WEBSOCKET_VERSION)])
    keys = [v.strip() for k, v in headers if k == "sec-websocket-key"]
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise _Reject(400, "Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    offers = _header_tokens(headers, "sec-websocket-protocol") or [""]
    chosen = handler.negotiate(offers, handler.websocket_protocols)
    if chosen is None:
        raise _Reject(403, f"unable to upgrade: no common protocol: client offers {offers}, "
                      f"server accepts {list(handler.websocket_protocols)}")
    reply = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
             ("Sec-WebSocket-Accept", websocket_accept(keys[0]))]
    if chosen:
        reply.append(("Sec-WebSocket-Protocol", chosen))
    return _Upgrade("websocket", chosen, reply)


def _negotiate(method: str, headers: Sequence[tuple[str, str]], handler: StreamHandler) -> _Upgrade:
    connection = [t.lower() for t in _header_tokens(headers, "connection")]
    upgrade = [t.lower() for t in _header_tokens(headers, "upgrade")]
    if "upgrade" not in connection or not upgrade:
        raise _Reject(400, "unable to upgrade: Connection: Upgrade and an Upgrade header are required")
    if "websocket" in upgrade:
        return _negotiate_websocket(method, headers, handler)
    if SPDY_UPGRADE.lower() in upgrade:
        return _negotiate_spdy(headers, handler)
    raise _Reject(400, f"unable to upgrade: unsupported protocol {', '.join(upgrade)}; "
                  f"expected websocket or {SPDY_UPGRADE}")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ_SIZE))  # b"" tells h11 about EOF


class StreamServer:
    """The exec / attach / port-forward HTTP server; one task per connection.

    ``handlers`` maps a kind (see KINDS) to its StreamHandler; kinds without one answer 404.
    ``idle_timeout`` None disables the idle timeout; ``handshake_timeout`` bounds the time from
    accept (including TLS) to the 101, so half-sent requests cannot pin connections.
    """

    def __init__(self, address: str, port: int, tokens: TokenStore,
                 handlers: Mapping[str, StreamHandler], ssl_context: ssl.SSLContext | None = None,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> None:
        unknown = set(handlers) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown streaming kinds: {sorted(unknown)}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        self._address = address
        self._port = port
        self._tokens = tokens
        self._handlers = dict(handlers)
        self._ssl = ssl_context
        self._idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._bound: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # Lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("streaming server already started")
        self._server = await asyncio.start_server(
            self._on_connection, self._address, self._port, ssl=self._ssl,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl else None,
            limit=READ_SIZE)
        # With port 0 the kernel picked the port; the URLs must carry the real one. (A host
        # name resolving to several addresses would get one port each: configure an address.)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._bound = (host, port)
        log.info("streaming server listening on %s", self.base_url)

    async def close(self) -> None:
        """Stop listening, cancel every connection and session, and wait until they are gone."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # URLs ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._bound is None:
            raise RuntimeError("streaming server not started")
        host, port = self._bound
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._ssl else 'http'}://{host}:{port}"

    def url(self, kind: str, token: str) -> str:
        """The URL of a pending token; it must have been issued for ``kind``.

        The server takes tokens with the kind of the URL path, so a token issued without a kind
        (or for another one) would only ever answer 404: that mistake is caught here instead.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown streaming kind {kind!r}")
        if not self._tokens.pending(token, kind):
            raise ValueError(f"token is not pending for {kind!r}: issue it with kind={kind!r}")
        return f"{self.base_url}/{kind}/{token}"

    def issue(self, kind: str, request: object) -> str:
        """Park ``request`` under a fresh token bound to ``kind`` and return its URL."""
        if kind not in KINDS:
            raise ValueError(f"unknown streaming kind {kind!r}")
        return self.url(kind, self._tokens.issue(request, kind))

    @property
    def connections(self) -> int:
        """Connections currently being served (handshakes and sessions)."""
        return len(self._tasks)

    # Per connection --------------------------------------------------------------------------
    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the server creates and owns each connection task,
        # so close() can cancel it. (asyncio's own wrapper task would also log a cancelled
        # task as an error on Python 3.11.)
        if self._closing:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            accepted, buffered = await self._handshake(reader, writer)
            if accepted is not None:
                session = Session(
                    kind=accepted.kind, request=accepted.request, transport=accepted.upgrade.transport,
                    protocol=accepted.upgrade.protocol, query=accepted.query, headers=accepted.headers,
                    peer=_peer(writer), reader=reader, writer=writer, buffered=buffered)
                await self._run(session, accepted.handler)
        except Exception:
            log.exception("streaming connection from %s failed", _peer(writer))
        finally:
            await self._shutdown(writer)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         ) -> tuple[_Accepted | None, bytes]:
        """Read the request and answer it: with the 101 (then the request's verdict and the bytes
        that followed the request are returned) or with an error (then None)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return None, b""  # the client closed before sending a request
                try:
                    accepted = self._accept(event)
                except _Reject as reject:
                    log.debug("streaming request %s %s from %s: %d %s", event.method.decode(),
                              event.target.decode(), _peer(writer), reject.status, reject.message)
                    await self._respond(conn, writer, reject)
                    return None, b""
                # h11 lets the 101 out only once the whole request (an empty body) is in; it
                # then pauses and keeps whatever followed as trailing data.
                while (event := await _next_event(conn, reader)) is not h11.PAUSED:
                    if isinstance(event, h11.ConnectionClosed):
                        return None, b""
                writer.write(conn.send(h11.InformationalResponse(
                    status_code=101, headers=accepted.upgrade.headers, reason=b"Switching Protocols",
                )) or b"")
                await writer.drain()
        except h11.RemoteProtocolError as exc:
            await self._respond(conn, writer, _Reject(exc.error_status_hint, "malformed request"))
            return None, b""
        except TimeoutError:
            log.debug("streaming client %s did not complete its request in time", _peer(writer))
            return None, b""
        except OSError as exc:  # includes ssl.SSLError: the client went away mid-handshake
            log.debug("streaming client %s: %s", _peer(writer), exc)
            return None, b""
        return accepted, conn.trailing_data[0]

    def _accept(self, request: h11.Request) -> _Accepted:
        """Route, spend the token and negotiate; raises _Reject for every refusal."""
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        parts = path.split("/")
        handler = self._handlers.get(parts[1]) if len(parts) == 3 and parts[0] == "" else None
        if handler is None or not _TOKEN_RE.fullmatch(parts[2]):
            raise _Reject(404, "not found")
        kind, token = parts[1], parts[2]
        method = request.method.decode("ascii", "replace")
        # kubectl and client-go use POST for SPDY upgrades, WebSocket clients GET.
        if method not in ("GET", "POST"):
            raise _Reject(405, "method not allowed", [("Allow", "GET, POST")])
        # Spent here, before anything is negotiated: a token works once, whatever happens next.
        parked = self._tokens.take(token, kind)
        if parked is None:
            raise _Reject(404, "unknown or expired token")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers]
        return _Accepted(kind, handler, parked, query, headers, _negotiate(method, headers, handler))

    @staticmethod
    async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, reject: _Reject) -> None:
        body = (reject.message + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                   ("X-Content-Type-Options", "nosniff"), ("Connection", "close"), *reject.headers]
        try:
            data = b"".join(conn.send(event) or b"" for event in (
                h11.Response(status_code=reject.status, headers=headers), h11.Data(data=body),
                h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return  # h11 says no response fits the connection's state; just close
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()

    async def _run(self, session: Session, handler: StreamHandler) -> None:
        loop = asyncio.get_running_loop()
        log.debug("streaming %s session from %s: %s %s", session.kind, session.peer,
                  session.transport, session.protocol or "(no sub-protocol)")
        try:
            async with asyncio.timeout(None) as deadline:
                if self._idle_timeout is not None:
                    # On expiry the Timeout cancels the handler and turns that into TimeoutError
                    # here, while a cancellation from close() still propagates as such.
                    session.idle = IdleDeadline(loop, self._idle_timeout,
                                                lambda: deadline.reschedule(loop.time()))
                try:
                    await handler.serve(session)
                finally:
                    if session.idle is not None:
                        session.idle.cancel()
        except TimeoutError:
            if session.idle is None or not session.idle.expired:
                raise  # the handler's own timeout, not ours
            log.info("streaming %s session from %s idle for %ss: closed", session.kind, session.peer,
                     self._idle_timeout)
        except ConnectionError as exc:
            log.debug("streaming %s session from %s: client gone (%s)", session.kind, session.peer, exc)
        finally:
            session.close()

    async def _shutdown(self, writer: asyncio.StreamWriter) -> None:
        """Close the connection; give queued bytes a bounded time to leave unless shutting down."""
        if self._closing:
            writer.transport.abort()
        writer.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()  # a client that stopped reading keeps no fd of ours
        except OSError:
            pass  # the connection's own error; it is closed either way
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
