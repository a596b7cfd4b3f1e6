"""The byte streams ttrpc runs over: a plain unix socket, or one logical connection of a mux.

The ttrpc drivers (``ttrpc_client``, ``ttrpc_server``) take any ``MessageStream``. Writes are
whole ttrpc frames, one per call, because the multiplexer must know where each one ends to
frame it the way Go peers expect (``mux_frames``); reads return whatever bytes came in.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

READ_SIZE = 64 * 1024


class MessageStream(Protocol):
    async def read(self) -> bytes:
        """Some bytes from the peer; b"" once it is gone (EOF, reset, or ``close``)."""
        ...

    async def write(self, message: bytes) -> None:
        """Send one whole ttrpc frame. The frame is queued in one piece before the first
        suspension point, so concurrent writers never interleave; ConnectionError once closed."""
        ...

    def close(self) -> None:
        """Stop both directions; pending and later reads return b""."""
        ...


class SocketStream:
    """A MessageStream over an asyncio stream pair, such as a unix socket connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except ConnectionError:
            return b""

    async def write(self, message: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("ttrpc stream is closed")
        self._writer.write(message)
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()
        # Wake a reader blocked in read(): closing our end does not feed EOF to our own reader.
        self._reader.feed_eof()
