"""Exec and attach sessions: the k8s remotecommand protocol over SPDY/3.1 or WebSocket, bridged
to a process (an interactive runc exec, or an attach to conmon).

One reader task turns the client's bytes into protocol events (stdin, resize, half-close); one
pump per output stream sends the process's output, waiting while the client's flow-control
window is full, so a slow client only ever slows its own session. When the client goes away
before the process ends, the process is aborted (an exec is killed, an attach detaches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from cri.streaming import spdy
from cri.streaming.channels import (
    Channel,
    ChannelClose,
    ChannelCodec,
    ChannelData,
    ExecOptions,
    ExecStreams,
    ProtocolError,
    RemoteCommandProtocol,
    ResizeDecoder,
    StreamRole,
    error_payload,
    exit_payload,
    remotecommand_protocol,
    websocket_ready_channel,
)
from cri.streaming.server import Session, send
from cri.streaming.spdy_frames import SpdyError, SpdyProtocolError

log = logging.getLogger(__name__)

STREAM_WAIT = 30.0  # how long the client has to open every stream it asked for
_CHUNK = 32 * 1024
_SEND_BUFFER = 256 * 1024  # bytes queued for a slow client before a pump waits


class Process(Protocol):
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader | None

    async def write_stdin(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def resize(self, width: int, height: int) -> None: ...
    async def finish(self) -> int | None: ...  # exit code; None for an attach
    async def abort(self) -> None: ...


Starter = Callable[[], Awaitable[Process]]


def _protocol(name: str) -> RemoteCommandProtocol:
    try:
        return remotecommand_protocol(name)
    except (KeyError, ValueError, ProtocolError):
        return remotecommand_protocol("channel.k8s.io")


def _status(protocol: RemoteCommandProtocol, code: int | None, command: tuple[str, ...]) -> bytes:
    return exit_payload(protocol, code or 0, command)


class _Gone:
    """The client went away before the process ended."""


_GONE = _Gone()


async def _run(proc: Process, pumps: Sequence[asyncio.Future[None]], gone: asyncio.Event
               ) -> int | _Gone | None:
    """Until the process ends (its exit code, after the pumps delivered all its output) or the
    client goes away first (the process is aborted and the pumps stopped: ``_GONE``)."""
    finished = asyncio.ensure_future(proc.finish())
    client_gone = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait([finished, client_gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_gone.cancel()
    if not finished.done():
        finished.cancel()
        await proc.abort()
        for p in pumps:
            p.cancel()
        return _GONE
    code = finished.result()
    await asyncio.gather(*pumps, return_exceptions=True)
    return code


# --- SPDY --------------------------------------------------------------------------------------


async def serve_spdy(session: Session, options: ExecOptions, start: Starter) -> None:
    protocol = _protocol(session.protocol)
    # kubectl, crictl and the kubelet speak SPDY through spdystream, which has no flow
    # control (it ignores WINDOW_UPDATE): windows would stall every session after 64 KiB.
    conn = spdy.SpdyConnection(is_client=False, flow_control=False)
    streams = ExecStreams(protocol, options)
    ready = asyncio.Event()
    window = asyncio.Event()
    gone = asyncio.Event()
    pending: list[tuple[int, bytes, bool]] = []
    proc: Process | None = None
    resize = ResizeDecoder()

    async def flush() -> None:
        await send(session, conn.data_to_send())

    async def deliver(stream_id: int, data: bytes, fin: bool) -> None:
        assert proc is not None
        role = streams.role_of(stream_id)
        if role is StreamRole.STDIN:
            if data:
                await proc.write_stdin(data)
            if fin:
                proc.close_stdin()
        elif role is StreamRole.RESIZE and data:
            with contextlib.suppress(ProtocolError):
                for size in resize.feed(data):
                    proc.resize(size.width, size.height)
        if data:
            with contextlib.suppress(SpdyError):
                conn.acknowledge(stream_id, len(data))

    async def read() -> None:
        try:
            while data := await session.read():
                try:
                    events = conn.receive_data(data)
                except SpdyProtocolError as exc:
                    log.info("exec stream: SPDY protocol error: %s", exc)
                    break
                for ev in events:
                    if isinstance(ev, spdy.StreamOpened):
                        try:
                            streams.add(ev.stream_id, ev.headers)
                        except ProtocolError as exc:
                            log.info("exec stream: refusing stream %d: %s", ev.stream_id, exc)
                            conn.reset(ev.stream_id)
                            continue
                        conn.reply(ev.stream_id, {})
                        if streams.complete:
                            ready.set()
                    elif isinstance(ev, spdy.DataReceived):
                        if proc is None:
                            pending.append((ev.stream_id, ev.data, ev.fin))
                        else:
                            await deliver(ev.stream_id, ev.data, ev.fin)
                    elif isinstance(ev, spdy.GoAway):
                        return
                window.set()
                await flush()
        finally:
            gone.set()
            ready.set()

    async def pump(reader: asyncio.StreamReader, stream_id: int) -> None:
        while chunk := await reader.read(_CHUNK):
            conn.send_data(stream_id, chunk)
            await flush()
            while conn.buffered_amount(stream_id) > _SEND_BUFFER and not gone.is_set():
                window.clear()
                await window.wait()
        with contextlib.suppress(SpdyError):
            conn.send_data(stream_id, b"", fin=True)
        await flush()

    reader = asyncio.ensure_future(read())
    try:
        try:
            await asyncio.wait_for(ready.wait(), STREAM_WAIT)
        except TimeoutError:
            log.info("exec stream: client did not open %s in time",
                     ", ".join(r.value for r in streams.missing))
            return
        if gone.is_set() and not streams.complete:
            return
        try:
            proc = await start()
        except Exception as exc:  # reported to the client on the error stream
            err = streams.stream_id(StreamRole.ERROR)
            if err is not None:
                conn.send_data(err, error_payload(protocol, str(exc)), fin=True)
                await flush()
            return
        for stream_id, data, fin in pending:
            await deliver(stream_id, data, fin)
        pending.clear()
        pumps = []
        for role, out in ((StreamRole.STDOUT, proc.stdout), (StreamRole.STDERR, proc.stderr)):
            sid = streams.stream_id(role)
            if sid is not None and out is not None:
                pumps.append(asyncio.ensure_future(pump(out, sid)))
        outcome = await _run(proc, pumps, gone)
        if isinstance(outcome, _Gone):
            return
        code = outcome
        err = streams.stream_id(StreamRole.ERROR)
        if err is not None:
            payload = _status(protocol, code, options.command)
            with contextlib.suppress(SpdyError):
                conn.send_data(err, payload, fin=True)
        with contextlib.suppress(SpdyError):
            conn.goaway()
        await flush()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        session.close()


# --- WebSocket ---------------------------------------------------------------------------------


async def serve_websocket(session: Session, options: ExecOptions, start: Starter) -> None:
    protocol = _protocol(session.protocol)
    codec = ChannelCodec.for_protocol(session.protocol)
    ws = Connection(ConnectionType.SERVER)
    resize = ResizeDecoder()
    gone = asyncio.Event()
    send_lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        encoded = codec.encode(channel, data)
        message: TextMessage | BytesMessage = (
            TextMessage(encoded) if isinstance(encoded, str) else BytesMessage(encoded))
        async with send_lock:
            if session.closed:
                return
            with contextlib.suppress(ConnectionError, LocalProtocolError):
                session.write(ws.send(message))
                await session.drain()

    try:
        proc = await start()
    except Exception as exc:
        await send(Channel.ERROR, error_payload(protocol, str(exc)))
        session.close()
        return

    async def read() -> None:
        parts: list[bytes | str] = []
        try:
            while data := await session.read():
                ws.receive_data(data)
                for ev in ws.events():
                    if isinstance(ev, CloseConnection):
                        with contextlib.suppress(LocalProtocolError, ConnectionError):
                            session.write(ws.send(ev.response()))
                        return
                    if isinstance(ev, Ping):
                        with contextlib.suppress(LocalProtocolError, ConnectionError):
                            session.write(ws.send(ev.response()))
                    elif isinstance(ev, Message):
                        parts.append(ev.data)
                        if not ev.message_finished:
                            continue
                        whole: bytes | str = ("".join(p for p in parts if isinstance(p, str))
                                              if isinstance(ev, TextMessage)
                                              else b"".join(p for p in parts
                                                            if isinstance(p, bytes)))
                        parts.clear()
                        try:
                            decoded = codec.decode(whole)
                        except ProtocolError:
                            continue
                        if isinstance(decoded, ChannelData):
                            if decoded.channel == Channel.STDIN:
                                await proc.write_stdin(decoded.data)
                            elif decoded.channel == Channel.RESIZE:
                                with contextlib.suppress(ProtocolError):
                                    for size in resize.feed(decoded.data):
                                        proc.resize(size.width, size.height)
                        elif isinstance(decoded, ChannelClose) and decoded.channel == Channel.STDIN:
                            proc.close_stdin()
        finally:
            gone.set()

    async def pump(reader: asyncio.StreamReader, channel: int) -> None:
        while chunk := await reader.read(_CHUNK):
            await send(channel, chunk)

    await send(websocket_ready_channel(options), b"")
    reader = asyncio.ensure_future(read())
    try:
        pumps = [asyncio.ensure_future(pump(proc.stdout, Channel.STDOUT))]
        if proc.stderr is not None and options.stderr:
            pumps.append(asyncio.ensure_future(pump(proc.stderr, Channel.STDERR)))
        outcome = await _run(proc, pumps, gone)
        if isinstance(outcome, _Gone):
            return
        code = outcome
        payload = _status(protocol, code, options.command)
        if payload:
            await send(Channel.ERROR, payload)
        async with send_lock:
            with contextlib.suppress(ConnectionError, LocalProtocolError):
                session.write(ws.send(CloseConnection(code=1000)))
                await session.drain()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        session.close()
