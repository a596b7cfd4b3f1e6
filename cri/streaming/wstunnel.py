"""SPDY tunnelled over WebSocket ("SPDY/3.1+portforward.k8s.io", what kubectl port-forward
speaks now): the binary messages, joined, are one SPDY byte stream. This wraps an upgraded
WebSocket session as the byte stream the SPDY handlers read and write."""

from __future__ import annotations

import contextlib

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from cri.streaming.server import Session


class TunnelStream:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._ws = Connection(ConnectionType.SERVER)
        self._eof = False
        self.request = session.request
        self.protocol = session.protocol

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def read(self, n: int = 65536) -> bytes:
        while not self._eof:
            data = await self._session.read(n)
            if not data:
                return b""
            self._ws.receive_data(data)
            out = bytearray()
            for ev in self._ws.events():
                if isinstance(ev, BytesMessage):
                    out += ev.data
                elif isinstance(ev, Ping):
                    self._send(ev.response())
                elif isinstance(ev, CloseConnection):
                    self._send(ev.response())
                    self._eof = True
                elif isinstance(ev, TextMessage):  # not part of the tunnel
                    self._send(CloseConnection(code=1003, reason="binary messages only"))
                    self._eof = True
            if out:
                return bytes(out)
        return b""

    def _send(self, event: BytesMessage | CloseConnection | Pong) -> None:
        with contextlib.suppress(LocalProtocolError, ConnectionError):
            self._session.write(self._ws.send(event))

    def write(self, data: bytes) -> None:
        self._send(BytesMessage(data))

    async def drain(self) -> None:
        await self._session.drain()

    def close(self) -> None:
        if not self._session.closed and not self._eof:
            self._send(CloseConnection(code=1000))
        self._session.close()
