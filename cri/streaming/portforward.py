"""PortForward over SPDY (portforward.k8s.io): each forwarded connection is a pair of streams
(data, error) sharing a requestID; when a pair is complete, a socket is opened to the port on
the pod's loopback (sandbox/netns.connect_tcp: a throwaway thread enters the netns) and bytes
are copied both ways. A port nothing listens on is reported on the pair's error stream; other
pairs go on. Many pairs (and ports) run at once on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, TextMessage
from wsproto.events import Ping as WsPing
from wsproto.utilities import LocalProtocolError

from cri.streaming import spdy
from cri.streaming.channels import ChannelCodec, ChannelData, ProtocolError
from cri.streaming.portforward_proto import (
    PortForwardPair,
    PortForwardPairs,
    PortStreamRole,
    channel_target,
    data_channel,
    error_channel,
    forward_error_message,
    parse_port_query,
    port_prefix,
)
from cri.streaming.server import Session, send
from cri.streaming.spdy_frames import SpdyError, SpdyProtocolError
from cri.streaming.wstunnel import TunnelStream
from sandbox.netns import connect_tcp

log = logging.getLogger(__name__)

_CHUNK = 32 * 1024


class _Forward:
    """One connected pair: the socket and the task copying it to the data stream."""

    def __init__(self, sock: socket.socket, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[None] | None = None


async def serve_spdy(session: Session | TunnelStream, pod_id: str,
                     netns: Callable[[], Path | None]) -> None:
    conn = spdy.SpdyConnection(is_client=False, flow_control=False)  # spdystream peers
    pairs = PortForwardPairs()
    by_stream: dict[int, _Forward] = {}
    waiting: dict[int, list[bytes]] = {}  # data that arrived before the socket was open
    tasks: set[asyncio.Task[None]] = set()
    lock = asyncio.Lock()

    async def flush() -> None:
        await send(session, conn.data_to_send())

    async def fail(pair: PortForwardPair, error: str) -> None:
        async with lock:
            if pair.error_stream is not None:
                msg = forward_error_message(pair.port, pod_id, error).encode()
                with contextlib.suppress(SpdyError):
                    conn.send_data(pair.error_stream, msg, fin=True)
            if pair.data_stream is not None:
                with contextlib.suppress(SpdyError):
                    conn.send_data(pair.data_stream, b"", fin=True)
            await flush()

    async def copy_out(pair: PortForwardPair, fwd: _Forward) -> None:
        assert pair.data_stream is not None
        try:
            while chunk := await fwd.reader.read(_CHUNK):
                async with lock:
                    conn.send_data(pair.data_stream, chunk)
                    await flush()
        except (OSError, SpdyError):
            pass
        async with lock:
            with contextlib.suppress(SpdyError):
                conn.send_data(pair.data_stream, b"", fin=True)
            if pair.error_stream is not None:
                with contextlib.suppress(SpdyError):
                    conn.send_data(pair.error_stream, b"", fin=True)
            await flush()

    async def open_pair(pair: PortForwardPair) -> None:
        assert pair.data_stream is not None
        try:
            sock = await asyncio.to_thread(connect_tcp, netns(), pair.port)
        except OSError as exc:
            await fail(pair, f"failed to connect to localhost:{pair.port} inside the pod: "
                             f"{exc.strerror or exc}")
            return
        reader, writer = await asyncio.open_connection(sock=sock)
        fwd = _Forward(sock, reader, writer)
        by_stream[pair.data_stream] = fwd
        for data in waiting.pop(pair.data_stream, []):
            if data:
                writer.write(data)
            else:
                with contextlib.suppress(OSError):
                    writer.write_eof()
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        fwd.task = asyncio.ensure_future(copy_out(pair, fwd))

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        while data := await session.read():
            try:
                events = conn.receive_data(data)
            except SpdyProtocolError as exc:
                log.info("port-forward: SPDY protocol error: %s", exc)
                break
            for ev in events:
                if isinstance(ev, spdy.StreamOpened):
                    conn.reply(ev.stream_id, {})
                    try:
                        pair = pairs.add(ev.stream_id, ev.headers)
                    except ProtocolError as exc:
                        log.info("port-forward: refusing stream %d: %s", ev.stream_id, exc)
                        conn.reset(ev.stream_id)
                        continue
                    if pair is not None:
                        spawn(open_pair(pair))
                elif isinstance(ev, spdy.DataReceived):
                    fwd = by_stream.get(ev.stream_id)
                    if fwd is None:
                        waiting.setdefault(ev.stream_id, []).append(ev.data)
                        if ev.fin:
                            waiting[ev.stream_id].append(b"")
                        continue
                    if ev.data:
                        fwd.writer.write(ev.data)
                        with contextlib.suppress(ConnectionError):
                            await fwd.writer.drain()
                    if ev.fin:
                        with contextlib.suppress(OSError):
                            fwd.writer.write_eof()
                elif isinstance(ev, spdy.StreamReset):
                    fwd = by_stream.pop(ev.stream_id, None)
                    if fwd is not None:
                        fwd.writer.close()
                elif isinstance(ev, spdy.GoAway):
                    return
            async with lock:
                await flush()
    finally:
        for task in list(tasks):
            task.cancel()
        for fwd in by_stream.values():
            if fwd.task is not None:
                fwd.task.cancel()
            fwd.writer.close()
        session.close()


async def serve_websocket_channels(session: Session, pod_id: str,
                                   netns: Callable[[], Path | None],
                                   requested: Sequence[int] = ()) -> None:
    """The kubelet's WebSocket port-forward (v4.channel.k8s.io, its base64 form, or no
    sub-protocol): the ports of the PortForward request, or when it named none those of the
    URL's ``port`` query (a client that reaches pycri directly), channels 2i (data) and 2i+1
    (error) for the i-th, each opened by the server writing the port number (uint16, little
    endian)."""
    codec = ChannelCodec.for_protocol(session.protocol)
    ws = Connection(ConnectionType.SERVER)
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        encoded = codec.encode(channel, data)
        message = TextMessage(encoded) if isinstance(encoded, str) else BytesMessage(encoded)
        async with send_lock:
            with contextlib.suppress(ConnectionError, LocalProtocolError):
                session.write(ws.send(message))
                await session.drain()

    try:
        ports = list(requested) or parse_port_query(session.query)
    except ValueError as exc:
        await send(1, str(exc).encode())
        session.close()
        return
    writers: dict[int, asyncio.StreamWriter] = {}
    copies: list[asyncio.Task[None]] = []

    async def copy_out(index: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(_CHUNK):
                await send(data_channel(index), chunk)

    try:
        for i, port in enumerate(ports):
            await send(data_channel(i), port_prefix(port))
            await send(error_channel(i), port_prefix(port))
        for i, port in enumerate(ports):
            try:
                sock = await asyncio.to_thread(connect_tcp, netns(), port)
            except OSError as exc:
                msg = forward_error_message(port, pod_id, f"failed to connect to localhost:"
                                                          f"{port}: {exc.strerror or exc}")
                await send(error_channel(i), msg.encode())
                continue
            reader, writer = await asyncio.open_connection(sock=sock)
            writers[i] = writer
            copies.append(asyncio.ensure_future(copy_out(i, reader)))
        while data := await session.read():
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, CloseConnection):
                    return
                if isinstance(ev, WsPing):
                    async with send_lock:
                        with contextlib.suppress(ConnectionError, LocalProtocolError):
                            session.write(ws.send(ev.response()))
                    continue
                if not isinstance(ev, Message) or not ev.message_finished:
                    continue  # kubectl sends whole messages; fragments are not supported here
                try:
                    decoded = codec.decode(ev.data)
                except ProtocolError:
                    continue
                if not isinstance(decoded, ChannelData):
                    continue
                target = channel_target(decoded.channel, len(ports))
                if target is None or target[1] is not PortStreamRole.DATA:
                    continue
                out = writers.get(target[0])
                if out is not None and decoded.data:
                    out.write(decoded.data)
                    with contextlib.suppress(ConnectionError):
                        await out.drain()
    finally:
        for task in copies:
            task.cancel()
        for writer in writers.values():
            writer.close()
        session.close()
