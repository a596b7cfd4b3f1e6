"""Client sides of exec / attach / port-forward, built from pycri's own sans-IO SPDY core and
wsproto: an HTTP upgrade, a SPDY session and a channel WebSocket. Plain HTTP reaches pycri's
streaming server; https reaches the kubelet's streaming proxy (its self-signed certificate is
not checked)."""

from __future__ import annotations

import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
)

from cri.streaming import spdy
from tests.e2e.helpers import connect

WAIT = 30.0
SPDY_EXEC = "v4.channel.k8s.io"
WS_EXEC = "v5.channel.k8s.io"


def open_socket(url: str) -> socket.socket:
    """A connection to the URL's host (TLS for https); closed by the conftest at test end."""
    u = urllib.parse.urlsplit(url)
    return connect(u.hostname, u.port, WAIT, tls=u.scheme == "https")


def upgrade(url: str, headers: list[tuple[str, str]], method: str = "POST"
            ) -> tuple[socket.socket, int, bytes]:
    """``method`` ``url`` with upgrade headers; returns the socket, the status and the bytes
    after the response head."""
    u = urllib.parse.urlsplit(url)
    sock = open_socket(url)
    conn = h11.Connection(h11.CLIENT)
    sock.sendall(conn.send(h11.Request(method=method, target=u.path + (f"?{u.query}" if u.query
                                                                        else ""),
                                       headers=[("Host", u.netloc), *headers])))
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(ev, h11.InformationalResponse | h11.Response):
            return sock, ev.status_code, conn.trailing_data[0]
        raise AssertionError(f"unexpected {ev}")


@dataclass
class SpdyClient:
    sock: socket.socket
    conn: spdy.SpdyConnection = field(default_factory=lambda: spdy.SpdyConnection(
        is_client=True, flow_control=False))
    data: dict[int, bytearray] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def open(self, headers: dict[str, str], fin: bool = False) -> int:
        sid = self.conn.open_stream(headers, fin=fin)
        self.data[sid] = bytearray()
        self.flush()
        return sid

    def pump(self, until: object) -> None:
        deadline = time.monotonic() + WAIT
        while not until():  # type: ignore[operator]
            assert time.monotonic() < deadline, "no answer in time"
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            for ev in self.conn.receive_data(chunk):
                if isinstance(ev, spdy.DataReceived):
                    self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                    if ev.fin:
                        self.closed.add(ev.stream_id)
                elif isinstance(ev, spdy.StreamReset):
                    self.closed.add(ev.stream_id)
            self.flush()


def spdy_session(url: str, protocol: str, method: str = "POST") -> SpdyClient:
    sock, status, rest = upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                       ("X-Stream-Protocol-Version", protocol)], method)
    assert status == 101, f"upgrade to SPDY answered {status}"
    client = SpdyClient(sock)
    if rest:
        client.conn.receive_data(rest)
    return client


@dataclass
class WsClient:
    """A channel WebSocket client: messages are one channel byte followed by the payload."""

    sock: socket.socket
    ws: WSConnection
    frames: list[bytes] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def connect(cls, url: str, protocol: str = WS_EXEC) -> WsClient:
        u = urllib.parse.urlsplit(url)
        sock = open_socket(url)
        ws = WSConnection(ConnectionType.CLIENT)
        target = u.path + (f"?{u.query}" if u.query else "")
        sock.sendall(ws.send(Request(host=u.netloc, target=target, subprotocols=[protocol])))
        client = cls(sock, ws)
        accepted: list[AcceptConnection] = []
        client._pump(lambda: bool(accepted), accepted)
        assert accepted and accepted[0].subprotocol == protocol
        return client

    def send(self, channel: int, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(bytes((channel,)) + payload)))

    def _pump(self, until: Callable[[], bool], accepted: list[AcceptConnection] | None = None) -> None:
        deadline = time.monotonic() + WAIT
        parts: list[bytes] = []
        while not until() and not self.closed:
            assert time.monotonic() < deadline, "no answer in time"
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                return
            self.ws.receive_data(data)
            for ev in self.ws.events():
                if isinstance(ev, AcceptConnection) and accepted is not None:
                    accepted.append(ev)
                elif isinstance(ev, RejectConnection):
                    raise AssertionError(f"WebSocket refused: {ev.status_code}")
                elif isinstance(ev, Message):
                    assert isinstance(ev.data, bytes), "the channel protocols send binary messages"
                    parts.append(ev.data)
                    if ev.message_finished:
                        self.frames.append(b"".join(parts))
                        parts.clear()
                elif isinstance(ev, CloseConnection):
                    self.closed = True

    def pump_until(self, until: Callable[[], bool]) -> None:
        self._pump(until)

    def run_to_close(self) -> None:
        self._pump(lambda: False)
        self.sock.close()

    def channel(self, n: int) -> bytes:
        return b"".join(f[1:] for f in self.frames if f[:1] == bytes((n,)))
