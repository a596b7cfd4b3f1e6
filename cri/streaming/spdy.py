"""A SPDY/3.1 connection as a state machine: bytes in, events out; bytes to send out.

The kubelet's streaming server and kubectl/crictl speak SPDY/3.1 through moby/spdystream. This
class plays either side. The caller owns the socket: it passes received bytes to
``receive_data``, acts on the returned events, and writes whatever ``data_to_send`` returns.

Streams: the client opens odd ids, the server even ids, each side's ids strictly increasing. A
stream is half-closed per direction by FIN and closed once both directions are, or at once by
RST_STREAM. Stream-level faults answer with RST_STREAM and a ``StreamReset(remote=False)`` event;
session-level faults queue a GOAWAY and make ``receive_data`` raise SpdyProtocolError, after
which the caller should flush ``data_to_send`` and close the transport.

Flow control (SPDY/3.1), when ``flow_control`` is on: every stream and the session start with a
64 KiB send window; a peer SETTINGS_INITIAL_WINDOW_SIZE changes the stream windows. Data beyond
a window waits in a per-stream buffer (``buffered_amount``) until WINDOW_UPDATE frames open it.
Received data counts against our windows until the application calls ``acknowledge`` for the
bytes it has really consumed; acknowledgements are batched into a WINDOW_UPDATE once half a
window's worth is pending, so a slow consumer slows the peer down instead of growing buffers.
Bytes of a stream that goes away while unacknowledged are returned to the session window then.

Interop warning: moby/spdystream (kubectl, crictl, critest, the kubelet) implements no flow
control at all. It ignores WINDOW_UPDATE, never sends one, and writes as much as it likes. A
connection facing it must be built with ``flow_control=False`` or it stalls after 64 KiB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cri.streaming.spdy_frames import (
    DEFAULT_MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    MAX_WINDOW,
    BadHeadersFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    FrameType,
    GoAwayFrame,
    GoAwayStatus,
    Headers,
    HeadersFrame,
    HeadersIn,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    SettingId,
    SettingsFrame,
    SpdyError,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
)

DEFAULT_WINDOW = 64 * 1024
# Outgoing data is cut into frames of at most this size so one busy stream cannot hog the
# connection for long and peers never see frames near their own size caps.
DATA_CHUNK = 16 * 1024


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOpened:
    stream_id: int
    associated_id: int
    headers: Headers
    fin: bool
    unidirectional: bool
    priority: int


@dataclass(frozen=True)
class Replied:
    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True)
class StreamReset:
    stream_id: int
    status: int
    remote: bool  # True: the peer sent RST_STREAM (or GOAWAY dropped it); False: we reset it


@dataclass(frozen=True)
class Ping:
    """The peer pinged us; the echo is already queued."""

    ping_id: int


@dataclass(frozen=True)
class PingAcknowledged:
    """The peer echoed a ``ping()`` of ours."""

    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsReceived:
    settings: dict[int, int]


Event = (
    StreamOpened | Replied | HeadersReceived | DataReceived | StreamReset | Ping | PingAcknowledged
    | GoAway | SettingsReceived
)


class ConnectionFailed(SpdyProtocolError):
    """Raised by ``receive_data`` on a session error; ``events`` holds what came before it."""

    def __init__(self, message: str, events: list[Event]) -> None:
        super().__init__(message)
        self.events = events


@dataclass
class _Stream:
    stream_id: int
    ours: bool
    send_window: int
    recv_window: int
    replied: bool = False  # ours: SYN_REPLY received; theirs: SYN_REPLY sent
    local_closed: bool = False  # no more send_* calls accepted (FIN queued or sent)
    fin_sent: bool = False
    remote_closed: bool = False
    unacked: int = 0  # received bytes the application has not acknowledged yet
    ack_pending: int = 0  # acknowledged bytes not yet announced in a WINDOW_UPDATE
    outbox: bytearray | None = None


class SpdyConnection:
    def __init__(self, is_client: bool, *, flow_control: bool = True,
                 max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
                 max_peer_streams: int = 1000) -> None:
        self.is_client = is_client
        self.flow_control = flow_control
        self.max_peer_streams = max_peer_streams
        self._decoder = FrameDecoder(max_frame_length)
        self._encoder = FrameEncoder()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if is_client else 2
        self._next_ping_id = 1 if is_client else 2
        self._pings: set[int] = set()
        self._last_peer_stream = 0
        self._peer_streams = 0
        self._peer_initial_window = DEFAULT_WINDOW  # initial send window of new streams
        self._session_send = DEFAULT_WINDOW
        self._session_recv = DEFAULT_WINDOW
        self._session_ack_pending = 0
        self._goaway_sent = False
        self._goaway_received = False
        self._failed = False

    # --- outgoing ----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def open_stream(self, headers: HeadersIn, fin: bool = False, *, associated_id: int = 0,
                    unidirectional: bool = False, priority: int = 0) -> int:
        self._check_usable()
        if self._goaway_received:
            raise SpdyError("the peer sent GOAWAY; it accepts no new streams")
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise SpdyError("stream ids exhausted")
        self._send(SynStreamFrame(stream_id, dict(_normalise(headers)), associated_id, priority,
                                  fin, unidirectional))
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(
            stream_id, ours=True, send_window=self._peer_initial_window, recv_window=DEFAULT_WINDOW,
            local_closed=fin, fin_sent=fin, remote_closed=unidirectional)
        self._remove_if_done(self._streams[stream_id])
        return stream_id

    def reply(self, stream_id: int, headers: HeadersIn, fin: bool = False) -> None:
        stream = self._sendable(stream_id, replying=True)
        if stream.ours or stream.replied:
            raise SpdyError(f"stream {stream_id} is not a peer stream awaiting a reply")
        self._send(SynReplyFrame(stream_id, dict(_normalise(headers)), fin))
        stream.replied = True
        if fin:
            stream.local_closed = stream.fin_sent = True
            self._remove_if_done(stream)

    def send_headers(self, stream_id: int, headers: HeadersIn, fin: bool = False) -> None:
        stream = self._sendable(stream_id)
        if fin and stream.outbox:
            raise SpdyError(f"stream {stream_id} still has buffered data; end it with send_data")
        self._send(HeadersFrame(stream_id, dict(_normalise(headers)), fin))
        if fin:
            stream.local_closed = stream.fin_sent = True
            self._remove_if_done(stream)

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Queue ``data``; what the windows allow is framed now, the rest when they open."""
        stream = self._sendable(stream_id)
        if stream.outbox is None:
            stream.outbox = bytearray()
        stream.outbox += data
        stream.local_closed = fin
        self._pump(stream)

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Abort a stream (queued data is dropped). A stream that is already gone is left alone."""
        stream = self._streams.get(stream_id)
        if stream is not None and not self._failed:
            self._send(RstStreamFrame(stream_id, status))
            self._remove(stream)

    def acknowledge(self, stream_id: int, n: int) -> None:
        """Report ``n`` bytes of ``stream_id`` as consumed so the peer may send that much more."""
        stream = self._streams.get(stream_id)
        if not self.flow_control or stream is None or self._failed:
            return  # a stream that went away already returned its bytes to the session
        if not 0 <= n <= stream.unacked:
            raise SpdyError(f"acknowledging {n} bytes but {stream.unacked} are outstanding")
        stream.unacked -= n
        self._credit_session(n)
        if not stream.remote_closed:
            stream.ack_pending += n
            if stream.ack_pending >= DEFAULT_WINDOW // 2:
                self._send(WindowUpdateFrame(stream_id, stream.ack_pending))
                stream.recv_window += stream.ack_pending
                stream.ack_pending = 0

    def ping(self) -> int:
        self._check_usable()
        ping_id = self._next_ping_id
        # Ids keep their parity and wrap below 2^31, as spdystream does.
        self._next_ping_id = ping_id + 2 if ping_id + 2 <= MAX_STREAM_ID else (1 if self.is_client else 2)
        self._pings.add(ping_id)
        self._send(PingFrame(ping_id))
        return ping_id

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Refuse new streams from now on; streams already open carry on. Idempotent."""
        if not self._goaway_sent and not self._failed:
            self._goaway_sent = True
            self._send(GoAwayFrame(self._last_peer_stream, status))

    def buffered_amount(self, stream_id: int | None = None) -> int:
        """Bytes queued behind flow-control windows, for one stream or all of them."""
        streams = self._streams.values() if stream_id is None else [self._streams.get(stream_id)]
        return sum(len(s.outbox) for s in streams if s is not None and s.outbox)

    # --- incoming ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self._failed:
            raise SpdyError("the connection already failed")
        events: list[Event] = []
        self._decoder.feed(data)
        try:
            while (frame := self._decoder.next_frame()) is not None:
                self._handle(frame, events)
        except SpdyProtocolError as exc:
            # Session error: tell the peer which of its streams we handled, then stop.
            self._failed = True
            self._out += self._encoder.encode(GoAwayFrame(self._last_peer_stream,
                                                          GoAwayStatus.PROTOCOL_ERROR))
            raise ConnectionFailed(str(exc), events) from exc
        return events

    def _handle(self, frame: Frame | BadHeadersFrame, events: list[Event]) -> None:
        match frame:
            case DataFrame():
                self._on_data(frame, events)
            case SynStreamFrame():
                self._on_syn_stream(frame, events)
            case SynReplyFrame() | HeadersFrame():
                self._on_reply_or_headers(frame, events)
            case BadHeadersFrame(kind, stream_id, _):
                if kind is FrameType.SYN_STREAM:
                    self._accept_peer_stream_id(stream_id)
                self._stream_error(stream_id, RstStatus.PROTOCOL_ERROR, events)
            case RstStreamFrame(stream_id, status):
                stream = self._streams.get(stream_id)
                if stream is not None:  # never answer a RST with a RST
                    self._remove(stream)
                    events.append(StreamReset(stream_id, status, remote=True))
            case SettingsFrame():
                self._on_settings(frame, events)
            case PingFrame(ping_id):
                if ping_id % 2 == (1 if self.is_client else 0):
                    # Our parity: an echo. Ids we never sent are ignored, as the spec asks.
                    if ping_id in self._pings:
                        self._pings.discard(ping_id)
                        events.append(PingAcknowledged(ping_id))
                else:
                    self._send(frame)
                    events.append(Ping(ping_id))
            case GoAwayFrame(last, status):
                self._goaway_received = True
                events.append(GoAway(last, status))
                # Our streams above ``last`` were never processed by the peer.
                for stream in [s for s in self._streams.values() if s.ours and s.stream_id > last]:
                    self._remove(stream)
                    events.append(StreamReset(stream.stream_id, RstStatus.REFUSED_STREAM, remote=True))
            case WindowUpdateFrame():
                self._on_window_update(frame, events)

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        size = len(frame.data)
        if self.flow_control:
            if size > self._session_recv:
                raise SpdyProtocolError(f"peer overran the session window by {size - self._session_recv}")
            self._session_recv -= size
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.remote_closed:
            status = RstStatus.INVALID_STREAM if stream is None else RstStatus.STREAM_ALREADY_CLOSED
            self._credit_session(size)  # nobody will consume it
            self._stream_error(frame.stream_id, status, events)
            return
        if self.flow_control and size > stream.recv_window:
            self._credit_session(size)
            self._stream_error(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
            return
        stream.recv_window -= size
        stream.unacked += size
        if size or frame.fin:
            events.append(DataReceived(frame.stream_id, frame.data, frame.fin))
        if frame.fin:
            stream.remote_closed = True
            self._remove_if_done(stream)

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        stream_id = frame.stream_id
        if stream_id in self._streams and not self._streams[stream_id].ours:
            self._stream_error(stream_id, RstStatus.PROTOCOL_ERROR, events)  # a second SYN_STREAM
            return
        self._accept_peer_stream_id(stream_id)
        if self._goaway_sent:
            return  # after GOAWAY new streams are ignored, not refused
        if self._peer_streams >= self.max_peer_streams:
            self._send(RstStreamFrame(stream_id, RstStatus.REFUSED_STREAM))
            return
        stream = _Stream(stream_id, ours=False, send_window=self._peer_initial_window,
                         recv_window=DEFAULT_WINDOW, remote_closed=frame.fin)
        if frame.unidirectional:  # we may not send anything, not even a SYN_REPLY
            stream.replied = stream.local_closed = stream.fin_sent = True
        self._streams[stream_id] = stream
        self._peer_streams += 1
        events.append(StreamOpened(stream_id, frame.associated_id, frame.headers, frame.fin,
                                   frame.unidirectional, frame.priority))
        self._remove_if_done(stream)

    def _accept_peer_stream_id(self, stream_id: int) -> None:
        if stream_id % 2 != (0 if self.is_client else 1):
            raise SpdyProtocolError(f"peer opened stream {stream_id} with our parity")
        if stream_id <= self._last_peer_stream:
            raise SpdyProtocolError(f"peer stream id {stream_id} is not above {self._last_peer_stream}")
        self._last_peer_stream = stream_id

    def _on_reply_or_headers(self, frame: SynReplyFrame | HeadersFrame, events: list[Event]) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            self._stream_error(frame.stream_id, RstStatus.INVALID_STREAM, events)
            return
        if stream.remote_closed:
            self._stream_error(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED, events)
            return
        if isinstance(frame, SynReplyFrame):
            if not stream.ours:
                self._stream_error(frame.stream_id, RstStatus.PROTOCOL_ERROR, events)
                return
            if stream.replied:
                self._stream_error(frame.stream_id, RstStatus.STREAM_IN_USE, events)
                return
            stream.replied = True
            events.append(Replied(frame.stream_id, frame.headers, frame.fin))
        else:
            events.append(HeadersReceived(frame.stream_id, frame.headers, frame.fin))
        if frame.fin:
            stream.remote_closed = True
            self._remove_if_done(stream)

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        settings: dict[int, int] = {}
        for setting in frame.settings:
            settings.setdefault(setting.id, setting.value)  # the first of duplicate ids wins
        window = settings.get(SettingId.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > MAX_WINDOW:
                raise SpdyProtocolError(f"initial window {window} exceeds 2^31-1")
            # Existing streams move by the difference and may go negative (SPDY/3.1 2.6.8).
            delta = window - self._peer_initial_window
            self._peer_initial_window = window
            for stream in self._streams.values():
                stream.send_window += delta
        events.append(SettingsReceived(settings))
        self._pump_all()

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        if not self.flow_control:
            return
        if frame.stream_id == 0:
            self._session_send += frame.delta
            if self._session_send > MAX_WINDOW:
                raise SpdyProtocolError("session send window exceeds 2^31-1")
            self._pump_all()
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # updates may race with the stream's end
        stream.send_window += frame.delta
        if stream.send_window > MAX_WINDOW:
            self._stream_error(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
            return
        self._pump(stream)

    # --- internals ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed:
            raise SpdyError("the connection failed")

    def _sendable(self, stream_id: int, *, replying: bool = False) -> _Stream:
        self._check_usable()
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise SpdyError(f"stream {stream_id} is not open for sending")
        if not replying and not stream.ours and not stream.replied:
            # spdystream silently drops data that arrives on a stream before its SYN_REPLY.
            raise SpdyError(f"reply to stream {stream_id} before sending on it")
        return stream

    def _send(self, frame: Frame) -> None:
        self._out += self._encoder.encode(frame)

    def _pump(self, stream: _Stream) -> None:
        outbox = stream.outbox
        if outbox is None or stream.fin_sent:
            return
        while outbox or stream.local_closed:
            size = min(len(outbox), DATA_CHUNK)
            if self.flow_control:  # windows can be negative after a SETTINGS shrink
                size = max(0, min(size, stream.send_window, self._session_send))
            if size == 0 and outbox:
                return  # blocked until a WINDOW_UPDATE
            chunk = bytes(outbox[:size])
            del outbox[:size]
            fin = stream.local_closed and not outbox
            self._send(DataFrame(stream.stream_id, chunk, fin))
            stream.send_window -= size
            self._session_send -= size
            if fin:
                stream.fin_sent = True
                self._remove_if_done(stream)
                return

    def _pump_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream.outbox and stream.stream_id in self._streams:
                self._pump(stream)

    def _credit_session(self, n: int) -> None:
        if not self.flow_control or n == 0:
            return
        self._session_ack_pending += n
        if self._session_ack_pending >= DEFAULT_WINDOW // 2:
            self._send(WindowUpdateFrame(0, self._session_ack_pending))
            self._session_recv += self._session_ack_pending
            self._session_ack_pending = 0

    def _stream_error(self, stream_id: int, status: RstStatus, events: list[Event]) -> None:
        self._send(RstStreamFrame(stream_id, status))
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._remove(stream)
            events.append(StreamReset(stream_id, status, remote=False))

    def _remove_if_done(self, stream: _Stream) -> None:
        if stream.fin_sent and stream.remote_closed:
            self._remove(stream)

    def _remove(self, stream: _Stream) -> None:
        if self._streams.pop(stream.stream_id, None) is None:
            return
        if not stream.ours:
            self._peer_streams -= 1
        self._credit_session(stream.unacked)


def _normalise(headers: HeadersIn) -> Iterable[tuple[str, list[str]]]:
    for name, value in headers.items():
        yield name, [value] if isinstance(value, str) else list(value)
