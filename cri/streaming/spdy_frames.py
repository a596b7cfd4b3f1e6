"""SPDY/3.1 frames: byte layout, header blocks and their zlib contexts, sans-IO.

Every frame starts with 8 bytes. A control frame has the top bit set, a 15-bit version (3) and
a 16-bit type, then 8 bits of flags and a 24-bit length; a data frame has the top bit clear, a
31-bit stream id, then flags and length the same way. Integers are big-endian.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a 32-bit pair count, then per pair a 32-bit
length + lowercase name and a 32-bit length + value, where one value may carry several values
joined by NUL. The block is deflated with a preset dictionary, and each direction of a
connection keeps one zlib stream for its whole life, flushed with Z_SYNC_FLUSH after every
block: that is why a receiver must inflate every block in order, even for streams it rejects,
and why a corrupt block is fatal to the whole session.

This module knows nothing about stream states or windows; ``spdy.py`` builds the connection on it.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM only
FLAG_SETTINGS_CLEAR = 0x01  # SETTINGS frame flag: forget persisted settings

MAX_STREAM_ID = 0x7FFFFFFF
MAX_WINDOW = 0x7FFFFFFF
MAX_LENGTH_FIELD = 0xFFFFFF
# The 24-bit length field allows ~16 MiB per frame. Real peers (moby/spdystream writes one frame
# per Write, and kubectl copies in 32 KiB pieces) stay far below 1 MiB; the cap bounds what one
# connection can make us buffer before a frame is complete.
DEFAULT_MAX_FRAME_LENGTH = 1 << 20
# Decompressed size of one header block: Kubernetes sends a handful of short headers, and the cap
# keeps a small compressed block from inflating into something huge.
MAX_HEADER_BLOCK = 256 * 1024

Headers = dict[str, list[str]]
HeadersIn = Mapping[str, str | Sequence[str]]


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SpdyError(Exception):
    """Misuse of the API (sending on a closed stream, a bad argument)."""


class SpdyProtocolError(SpdyError):
    """The peer broke the protocol so badly that the session must end (a "session error")."""


class HeaderBlockError(SpdyError):
    """A header block inflated fine but breaks the name/value rules: a stream error only."""


def _build_dictionary() -> bytes:
    # The SPDY/3 preset dictionary: 65 length-prefixed words, then a run of raw text. Kept as
    # words rather than 1423 hex bytes; tests pin its length and Adler-32 (the DICTID every
    # SPDY/3 header stream carries, e3c6a7c2).
    words = (
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
        "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
        "content-base", "content-encoding", "content-language", "content-length", "content-location",
        "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
        "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
        "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization",
        "range", "referer", "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade",
        "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
        "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
    )
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for word in words:
        raw = word.encode("ascii")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out + tail.encode("ascii"))


SPDY_DICTIONARY = _build_dictionary()


# --- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0  # 0 (highest) .. 7
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStreamFrame:
    stream_id: int
    status: int


class Setting(NamedTuple):
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class SettingsFrame:
    settings: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame:
    last_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class WindowUpdateFrame:
    stream_id: int  # 0 = the session window (SPDY/3.1)
    delta: int


@dataclass(frozen=True)
class BadHeadersFrame:
    """A SYN_STREAM, SYN_REPLY or HEADERS whose block broke a name/value rule.

    The block was still inflated, so the zlib context is intact and only the stream has to be
    reset. ``associated_id`` etc. are not kept: nothing about a rejected stream is used.
    """

    kind: FrameType
    stream_id: int
    reason: str


Frame = (
    DataFrame | SynStreamFrame | SynReplyFrame | HeadersFrame | RstStreamFrame | SettingsFrame
    | PingFrame | GoAwayFrame | WindowUpdateFrame
)


# --- header blocks ---------------------------------------------------------------------------


def encode_header_block(headers: HeadersIn) -> bytes:
    """The uncompressed name/value block. Names are lowercased; a list value becomes NUL-joined."""
    out = bytearray(struct.pack(">I", len(headers)))
    seen: set[str] = set()
    for name, value in headers.items():
        lname = name.lower()
        if not lname or lname in seen:
            raise SpdyError(f"header name {name!r} is empty or repeated")
        seen.add(lname)
        values = [value] if isinstance(value, str) else list(value)
        if not values or any("\0" in v for v in values) or (len(values) > 1 and "" in values):
            # An empty part would put NULs at an edge or side by side, which the spec forbids.
            raise SpdyError(f"header {name!r} has an unencodable value list {values!r}")
        raw_name = lname.encode("utf-8", "surrogateescape")
        raw_value = "\0".join(values).encode("utf-8", "surrogateescape")
        out += struct.pack(">I", len(raw_name)) + raw_name + struct.pack(">I", len(raw_value)) + raw_value
    return bytes(out)


def decode_header_block(raw: bytes) -> Headers:
    """Parse an inflated block.

    Structural damage (lengths running past the end, bytes left over) raises SpdyProtocolError;
    broken naming rules (empty, uppercase or repeated names, empty parts in a NUL-separated
    value) raise HeaderBlockError, which only costs the stream. Text is decoded as UTF-8 with
    surrogateescape so any bytes survive a decode/encode round trip.
    """
    view = memoryview(raw)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise SpdyProtocolError("header block is truncated")
        chunk = bytes(view[pos:pos + n])
        pos += n
        return chunk

    (count,) = struct.unpack(">I", take(4))
    if count * 8 > len(view) - 4:  # each pair needs at least its two length fields
        raise SpdyProtocolError(f"header block claims {count} pairs in {len(view)} bytes")
    headers: Headers = {}
    problem = ""
    for _ in range(count):
        name = take(struct.unpack(">I", take(4))[0]).decode("utf-8", "surrogateescape")
        value = take(struct.unpack(">I", take(4))[0]).decode("utf-8", "surrogateescape")
        parts = value.split("\0")
        if not name or name != name.lower():
            problem = problem or f"bad header name {name!r}"
        elif name in headers:
            problem = problem or f"repeated header name {name!r}"
        elif len(parts) > 1 and "" in parts:
            problem = problem or f"empty value in NUL-separated header {name!r}"
        headers[name] = parts
    if pos != len(view):
        raise SpdyProtocolError(f"{len(view) - pos} stray bytes after the header block")
    if problem:
        raise HeaderBlockError(problem)
    return headers


class HeaderCompressor:
    """Deflate side of one connection direction: one zlib stream for every block we send."""

    def __init__(self) -> None:
        # Level 9 with a 2 KiB window and memLevel 1 is what Chromium used: header blocks are
        # small, and this keeps each connection's deflate state at a few KiB instead of ~256 KiB.
        self._zlib = zlib.compressobj(9, zlib.DEFLATED, 11, 1, zdict=SPDY_DICTIONARY)

    def compress(self, headers: HeadersIn) -> bytes:
        raw = encode_header_block(headers)
        return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """Inflate side of one connection direction; accepts any window size the peer chose."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(15, zdict=SPDY_DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        try:
            raw = self._zlib.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not inflate: {exc}") from exc
        if len(raw) > MAX_HEADER_BLOCK or self._zlib.unconsumed_tail:
            raise SpdyProtocolError(f"header block inflates beyond {MAX_HEADER_BLOCK} bytes")
        return decode_header_block(raw)


# --- encoding --------------------------------------------------------------------------------


def _control(kind: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH_FIELD:
        raise SpdyError(f"{kind.name} payload of {len(payload)} bytes does not fit a frame")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def _check_id(value: int, what: str, *, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= value <= MAX_STREAM_ID:
        raise SpdyError(f"{what} {value} is outside 31 bits")
    return value


class FrameEncoder:
    """Turns frames into bytes; owns the compressor, so use one encoder per connection."""

    def __init__(self) -> None:
        self._headers = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, fin):
                if len(data) > MAX_LENGTH_FIELD:
                    raise SpdyError(f"data frame of {len(data)} bytes does not fit")
                flags_len = (FLAG_FIN if fin else 0) << 24 | len(data)
                return struct.pack(">II", _check_id(stream_id, "stream id"), flags_len) + data
            case SynStreamFrame(stream_id, headers, associated_id, priority, fin, unidirectional):
                if not 0 <= priority <= 7:
                    raise SpdyError(f"priority {priority} is not 0..7")
                flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
                # Priority sits in the top 3 bits; the following byte (the SPDY/3 credential
                # slot, unused in 3.1) stays 0.
                fixed = struct.pack(">IIBB", _check_id(stream_id, "stream id"),
                                    _check_id(associated_id, "associated id", zero_ok=True),
                                    priority << 5, 0)
                return _control(FrameType.SYN_STREAM, flags, fixed + self._headers.compress(headers))
            case SynReplyFrame(stream_id, headers, fin) | HeadersFrame(stream_id, headers, fin):
                kind = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
                fixed = struct.pack(">I", _check_id(stream_id, "stream id"))
                return _control(kind, FLAG_FIN if fin else 0, fixed + self._headers.compress(headers))
            case RstStreamFrame(stream_id, status):
                if not 1 <= status <= 0xFFFFFFFF:
                    raise SpdyError(f"RST_STREAM status {status} is invalid")
                return _control(FrameType.RST_STREAM, 0,
                                struct.pack(">II", _check_id(stream_id, "stream id"), status))
            case SettingsFrame(settings, clear):
                body = bytearray(struct.pack(">I", len(settings)))
                for s in settings:
                    body += struct.pack(">II", (s.flags & 0xFF) << 24 | (s.id & 0xFFFFFF), s.value)
                return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if clear else 0, bytes(body))
            case PingFrame(ping_id):
                return _control(FrameType.PING, 0, struct.pack(">I", ping_id))
            case GoAwayFrame(last_stream_id, status):
                return _control(FrameType.GOAWAY, 0, struct.pack(
                    ">II", _check_id(last_stream_id, "last stream id", zero_ok=True), status))
            case WindowUpdateFrame(stream_id, delta):
                if not 1 <= delta <= MAX_WINDOW:
                    raise SpdyError(f"window delta {delta} is outside 1..2^31-1")
                return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(
                    ">II", _check_id(stream_id, "stream id", zero_ok=True), delta))
        raise SpdyError(f"cannot encode {frame!r}")


# --- decoding --------------------------------------------------------------------------------

# Exact payload lengths of the fixed-size control frames, checked before unpacking.
_FIXED_LENGTH = {FrameType.RST_STREAM: 8, FrameType.PING: 4, FrameType.GOAWAY: 8,
                 FrameType.WINDOW_UPDATE: 8}
_HEADER_OFFSET = {FrameType.SYN_STREAM: 10, FrameType.SYN_REPLY: 4, FrameType.HEADERS: 4}


@dataclass
class FrameDecoder:
    """Incremental parser: ``feed`` bytes cut anywhere, then pull frames with ``next_frame``.

    Raises SpdyProtocolError for anything that must end the session: a version other than 3,
    a frame longer than ``max_frame_length``, a wrong fixed length, stream id 0 where one is
    required, a header block that does not inflate. Unknown control frame types are skipped,
    as the spec asks (that covers SPDY/3's CREDENTIAL and NOOP).
    """

    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH
    _buf: bytearray = field(default_factory=bytearray)
    _headers: HeaderDecompressor = field(default_factory=HeaderDecompressor)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | BadHeadersFrame | None:
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf)
            length = second & 0xFFFFFF
            if length > self.max_frame_length:
                raise SpdyProtocolError(f"frame of {length} bytes exceeds the {self.max_frame_length} cap")
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise SpdyProtocolError(f"unsupported SPDY version {version}")
            if len(self._buf) < 8 + length:
                return None
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]  # bytearray drops a prefix without copying the rest
            flags = second >> 24
            if not first & 0x80000000:
                stream_id = first & MAX_STREAM_ID
                if stream_id == 0:
                    raise SpdyProtocolError("data frame on stream 0")
                return DataFrame(stream_id, payload, bool(flags & FLAG_FIN))
            try:
                kind = FrameType(first & 0xFFFF)
            except ValueError:
                continue
            return self._control(kind, flags, payload)
        return None

    def _control(self, kind: FrameType, flags: int, payload: bytes) -> Frame | BadHeadersFrame:
        want = _FIXED_LENGTH.get(kind)
        if want is not None and len(payload) != want:
            raise SpdyProtocolError(f"{kind.name} frame has length {len(payload)}, expected {want}")
        if kind in _HEADER_OFFSET:
            return self._with_headers(kind, flags, payload)
        if kind is FrameType.RST_STREAM:
            stream_id, status = struct.unpack(">II", payload)
            if stream_id & MAX_STREAM_ID == 0 or status == 0:
                raise SpdyProtocolError("RST_STREAM with stream id 0 or status 0")
            return RstStreamFrame(stream_id & MAX_STREAM_ID, status)
        if kind is FrameType.SETTINGS:
            if len(payload) < 4:
                raise SpdyProtocolError("SETTINGS frame without an entry count")
            (count,) = struct.unpack_from(">I", payload)
            if len(payload) != 4 + 8 * count:
                raise SpdyProtocolError(f"SETTINGS frame of {len(payload)} bytes claims {count} entries")
            entries = tuple(
                Setting(flag_id & 0xFFFFFF, value, flag_id >> 24)
                for flag_id, value in struct.iter_unpack(">II", payload[4:])
            )
            return SettingsFrame(entries, bool(flags & FLAG_SETTINGS_CLEAR))
        if kind is FrameType.PING:
            return PingFrame(struct.unpack(">I", payload)[0])
        if kind is FrameType.GOAWAY:
            last, status = struct.unpack(">II", payload)
            return GoAwayFrame(last & MAX_STREAM_ID, status)
        stream_id, delta = struct.unpack(">II", payload)  # WINDOW_UPDATE
        if delta & MAX_WINDOW == 0:
            raise SpdyProtocolError("WINDOW_UPDATE with a zero delta")
        return WindowUpdateFrame(stream_id & MAX_STREAM_ID, delta & MAX_WINDOW)

    def _with_headers(self, kind: FrameType, flags: int, payload: bytes) -> Frame | BadHeadersFrame:
        offset = _HEADER_OFFSET[kind]
        if len(payload) < offset:
            raise SpdyProtocolError(f"{kind.name} frame of {len(payload)} bytes is too short")
        stream_id = struct.unpack_from(">I", payload)[0] & MAX_STREAM_ID
        if stream_id == 0:
            raise SpdyProtocolError(f"{kind.name} on stream 0")
        try:
            # Always inflate, even for frames about to be rejected: the zlib stream is shared.
            headers = self._headers.decompress(payload[offset:])
        except HeaderBlockError as exc:
            return BadHeadersFrame(kind, stream_id, str(exc))
        fin = bool(flags & FLAG_FIN)
        if kind is FrameType.SYN_STREAM:
            associated = struct.unpack_from(">I", payload, 4)[0] & MAX_STREAM_ID
            return SynStreamFrame(stream_id, headers, associated, payload[8] >> 5, fin,
                                  bool(flags & FLAG_UNIDIRECTIONAL))
        if kind is FrameType.SYN_REPLY:
            return SynReplyFrame(stream_id, headers, fin)
        return HeadersFrame(stream_id, headers, fin)
