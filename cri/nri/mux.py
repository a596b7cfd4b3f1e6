"""The NRI multiplexer over an asyncio stream pair: logical connections as MessageStreams.

``Mux`` owns the trunk. Open the logical connections first, then ``start`` reading: frames for
a connection that is not open yet are dropped (the Go runtime side holds its reader back the
same way until its connections exist). Each open connection buffers what arrives until its
reader takes it; a connection holding more than ``max_buffered`` unread bytes ends the whole
trunk, as an overflowing queue does in the Go mux, so a peer cannot make pycri buffer without
bound. When the trunk ends, for whatever reason, every logical connection reads EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cri.nri.mux_frames import MAX_PAYLOAD, Demultiplexer, MuxError, encode
from cri.nri.transport import READ_SIZE

log = logging.getLogger(__name__)

# Unread bytes per logical connection. A ttrpc driver reads continuously, so its backlog stays
# around one frame; four of the largest frames leave room for a slow event loop.
DEFAULT_MAX_BUFFERED = 4 * MAX_PAYLOAD


class MuxConnection:
    """One logical connection; a MessageStream."""

    def __init__(self, mux: Mux, conn_id: int) -> None:
        self.conn_id = conn_id
        self._mux = mux
        self._buf = bytearray()
        self._ready = asyncio.Event()
        self._eof = False

    async def read(self) -> bytes:
        while not self._buf and not self._eof:
            self._ready.clear()
            await self._ready.wait()
        data = bytes(self._buf)
        self._buf.clear()
        return data

    async def write(self, message: bytes) -> None:
        if self._eof:
            raise ConnectionResetError(f"mux connection {self.conn_id} is closed")
        await self._mux._send(self.conn_id, message)

    def close(self) -> None:
        """Detach from the mux; the trunk and the other connections stay up (as in Go)."""
        self._mux._detach(self.conn_id)
        self._end()

    def _deliver(self, data: bytes) -> bool:
        self._buf += data
        self._ready.set()
        return len(self._buf) <= self._mux.max_buffered

    def _end(self) -> None:
        self._eof = True
        self._ready.set()


class Mux:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self.max_buffered = max_buffered
        self._reader = reader
        self._writer = writer
        self._demux = Demultiplexer()
        self._conns: dict[int, MuxConnection] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.error: str | None = None  # why the trunk ended, if not by a clean EOF or close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def open(self, conn_id: int) -> MuxConnection:
        if self.closed:
            raise ConnectionResetError("mux is closed")
        if conn_id in self._conns:
            raise ValueError(f"mux connection {conn_id} is already open")
        self._demux.open(conn_id)
        conn = self._conns[conn_id] = MuxConnection(self, conn_id)
        return conn

    def start(self) -> None:
        """Start reading the trunk (once the logical connections are open)."""
        if self._task is None and not self.closed:
            self._task = asyncio.create_task(self._pump(), name="nri-mux")

    def close(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._shut()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pump(self) -> None:
        try:
            while data := await self._reader.read(READ_SIZE):
                for delivery in self._demux.receive_data(data):
                    if not self._conns[delivery.conn_id]._deliver(delivery.data):
                        raise MuxError(f"mux connection {delivery.conn_id} has over "
                                       f"{self.max_buffered} unread bytes")
            self._demux.check_eof()
        except MuxError as exc:
            self.error = str(exc)
            log.warning("NRI mux: %s; closing the connection", exc)
        except ConnectionError as exc:
            self.error = f"trunk read failed: {exc}"
        finally:
            self._shut()

    async def _send(self, conn_id: int, message: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("mux is closed")
        self._writer.write(encode(conn_id, message))
        await self._writer.drain()

    def _detach(self, conn_id: int) -> None:
        if self._conns.pop(conn_id, None) is not None:
            self._demux.close(conn_id)

    def _shut(self) -> None:
        if self.closed:
            return
        self._closed.set()
        self._writer.close()
        for conn in self._conns.values():
            conn._end()
        self._conns.clear()
