"""Kubernetes remote-command sub-protocols (exec/attach), sans-IO and transport-independent.

kubectl, crictl and the kubelet speak one of these on top of an upgraded HTTP connection:

- SPDY/3.1 (``Upgrade: SPDY/3.1``): the client lists protocols in ``X-Stream-Protocol-Version``
  headers and opens one SPDY stream per role (error, stdin, stdout, stderr, resize), naming the
  role in a ``streamType`` header. Versions: ``channel.k8s.io`` (v1), v2 (fixes v1's stdin EOF
  and error-stream bugs), v3 (adds the resize stream), v4 (the error stream carries a JSON
  ``metav1.Status`` with the exit code instead of plain text).
- WebSocket (``Sec-WebSocket-Protocol``): one connection, every message starts with a channel
  number (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). ``base64.`` variants send text
  frames with the channel as an ASCII digit and base64 data. v5 adds a CLOSE signal (channel
  255) so a client can half-close stdin, which WebSocket itself cannot express.

Nothing here touches a socket, a clock or a process: the SPDY codec and the HTTP/WebSocket
server feed headers and payloads in and act on what comes out.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl

# --- protocol names ---------------------------------------------------------------------------

CHANNEL_V1 = "channel.k8s.io"
CHANNEL_V2 = "v2.channel.k8s.io"
CHANNEL_V3 = "v3.channel.k8s.io"
CHANNEL_V4 = "v4.channel.k8s.io"
CHANNEL_V5 = "v5.channel.k8s.io"
BASE64_CHANNEL_V1 = "base64.channel.k8s.io"
BASE64_CHANNEL_V4 = "v4.base64.channel.k8s.io"
# A WebSocket client may offer no sub-protocol at all; the kubelet then speaks binary v1 framing.
NO_SUBPROTOCOL = ""

HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_ACCEPTED_PROTOCOL_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
HEADER_WEBSOCKET_PROTOCOL = "Sec-WebSocket-Protocol"

# What pycri accepts, most capable first. SPDY stops at v4: v5 only adds the CLOSE signal, which
# SPDY already has as FIN (client-go offers v5 over SPDY too and settles for v4).
SPDY_REMOTECOMMAND_PROTOCOLS: tuple[str, ...] = (CHANNEL_V4, CHANNEL_V3, CHANNEL_V2, CHANNEL_V1)
# The kubelet's WebSocket server takes "", channel, base64.channel, v4.channel and
# v4.base64.channel (never v2/v3). v5 is added because client-go's WebSocket executor (crictl,
# critest --websocket-exec) offers v5.channel.k8s.io and nothing else. "" stands for a client
# that offers no sub-protocol at all.
WEBSOCKET_REMOTECOMMAND_PROTOCOLS: tuple[str, ...] = (
    CHANNEL_V5, CHANNEL_V4, BASE64_CHANNEL_V4, CHANNEL_V1, BASE64_CHANNEL_V1, NO_SUBPROTOCOL)

# SPDY tunnelled through WebSocket: the WebSocket sub-protocol is "SPDY/3.1+" + the SPDY one.
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
_K8S_SUFFIX = ".k8s.io"

# How long a SPDY client gets to open all the streams it promised (kubelet default).
STREAM_CREATION_TIMEOUT = 30.0


class ProtocolError(ValueError):
    """The peer broke a sub-protocol rule; the message says which."""


class HandshakeError(ProtocolError):
    """Negotiation failed: answer the upgrade request with ``status`` and ``headers``."""

    def __init__(self, message: str, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


# --- negotiation --------------------------------------------------------------------------------


def split_header_values(values: Iterable[str]) -> list[str]:
    """Protocol tokens from one or more comma-separated header values, in order, blanks dropped."""
    return [tok for value in values for tok in (t.strip() for t in value.split(",")) if tok]


def negotiate(client_offers: Sequence[str], supported: Sequence[str], *,
              prefer: Literal["client", "server"] = "client") -> str | None:
    """The protocol both sides speak, or None.

    Both kubelet paths (SPDY ``httpstream.Handshake`` and the x/net WebSocket handshake) walk
    the *client's* list and take its first supported entry, so ``prefer="client"`` is the
    default; real clients list their best version first, so the two orders agree in practice.
    """
    if prefer == "client":
        return next((p for p in client_offers if p in supported), None)
    return next((p for p in supported if p in client_offers), None)


def spdy_handshake(header_values: Sequence[str], supported: Sequence[str]) -> str:
    """Pick the SPDY sub-protocol from the request's ``X-Stream-Protocol-Version`` values.

    The caller echoes the result in an ``X-Stream-Protocol-Version`` response header. A request
    without the header is a 400; one whose offers all miss is a 403 that lists what we accept.
    """
    offers = split_header_values(header_values)
    if not offers:
        raise HandshakeError(f"unable to upgrade: no {HEADER_PROTOCOL_VERSION} offered", 400)
    chosen = negotiate(offers, supported)
    if chosen is None:
        raise HandshakeError(
            f"unable to upgrade: unable to negotiate protocol: client supports {offers}, "
            f"server accepts {list(supported)}", 403,
            [(HEADER_ACCEPTED_PROTOCOL_VERSIONS, p) for p in supported])
    return chosen


def websocket_handshake(header_values: Sequence[str], supported: Sequence[str]) -> str:
    """Pick the WebSocket sub-protocol from ``Sec-WebSocket-Protocol`` values.

    A client that offers none is taken to offer ``NO_SUBPROTOCOL`` (""), which the supported
    lists include as the kubelet does: the reply then carries no ``Sec-WebSocket-Protocol``
    header and the session speaks binary framing with v1 (plain text) status.
    """
    offers = split_header_values(header_values)
    chosen = negotiate(offers or [NO_SUBPROTOCOL], supported)
    if chosen is None:
        if not offers:
            raise HandshakeError("unable to upgrade: no sub-protocol offered", 400)
        raise HandshakeError(
            f"requested protocol(s) are not supported: {offers}; supports {list(supported)}", 403)
    return chosen


def untunnel(protocol: str) -> str | None:
    """The SPDY protocol inside a tunnelling one ("SPDY/3.1+portforward.k8s.io" -> "portforward.k8s.io").

    None when ``protocol`` is not a tunnel. Tunnelling means the WebSocket's binary messages,
    concatenated, form a SPDY/3.1 byte stream (message boundaries mean nothing); there is no
    inner HTTP request, the SPDY session starts with the first byte.
    """
    if protocol.startswith(SPDY_TUNNEL_PREFIX) and protocol.endswith(_K8S_SUFFIX):
        return protocol[len(SPDY_TUNNEL_PREFIX):]
    return None


def unwrap_tunnel_message(message: bytes | str) -> bytes:
    """SPDY bytes from one tunnel message; text messages are refused as client-go does."""
    if isinstance(message, str):
        raise ProtocolError("text message on a SPDY tunnel")
    return message


@dataclass(frozen=True, slots=True)
class RemoteCommandProtocol:
    """What a negotiated remote-command protocol implies.

    ``version`` 1..5. SPDY: a resize stream exists from v3 (and only with a tty). WebSocket:
    the resize channel is always open, whatever the version. Both: the error stream/channel
    carries JSON status from v4, plain text before.
    """

    name: str
    version: int
    base64: bool = False

    @property
    def status_json(self) -> bool:
        return self.version >= 4

    @property
    def resize(self) -> bool:
        return self.version >= 3

    @property
    def close_signal(self) -> bool:
        return self.version >= 5


_REMOTECOMMAND = {p.name: p for p in (
    RemoteCommandProtocol(NO_SUBPROTOCOL, 1),
    RemoteCommandProtocol(CHANNEL_V1, 1),
    RemoteCommandProtocol(CHANNEL_V2, 2),
    RemoteCommandProtocol(CHANNEL_V3, 3),
    RemoteCommandProtocol(CHANNEL_V4, 4),
    RemoteCommandProtocol(CHANNEL_V5, 5),
    RemoteCommandProtocol(BASE64_CHANNEL_V1, 1, base64=True),
    RemoteCommandProtocol(BASE64_CHANNEL_V4, 4, base64=True),
)}


def remotecommand_protocol(name: str) -> RemoteCommandProtocol:
    """The description of a negotiated name; ProtocolError for names we do not know."""
    try:
        return _REMOTECOMMAND[name]
    except KeyError:
        raise ProtocolError(f"unknown remote command protocol {name!r}") from None


# --- exec/attach options ------------------------------------------------------------------------

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"", "0", "f", "F", "false", "FALSE", "False"})


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """Which standard streams a session carries, and the command (empty for attach)."""

    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    command: tuple[str, ...] = ()

    def validate(self) -> None:
        """The CRI Exec/Attach request rules (the kubelet's wording); ValueError if broken."""
        if self.tty and self.stderr:
            # A tty has one output: stdout and stderr arrive merged.
            raise ValueError("tty and stderr cannot both be true")
        if not (self.stdin or self.stdout or self.stderr):
            raise ValueError("one of stdin, stdout, or stderr must be set")


def _query_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"query parameter {name}={value!r} is not a boolean")


def parse_exec_query(query: str) -> ExecOptions:
    """Options from an exec/attach URL query.

    Takes both spellings: the kubelet's own (``input``/``output``/``error``/``tty`` = 1) and the
    API server's ``PodExecOptions`` (``stdin``/``stdout``/``stderr``/``tty`` = true); ``command``
    repeats, one argv element each. As the kubelet does, a tty drops stderr rather than failing,
    and a session without any stream is refused. pycri's own /exec/<token> URLs do not need
    this: their options come from the CRI request parked behind the token.
    """
    flags = {"stdin": False, "stdout": False, "stderr": False, "tty": False}
    aliases = {"input": "stdin", "output": "stdout", "error": "stderr"}
    command: list[str] = []
    for key, value in parse_qsl(query.removeprefix("?"), keep_blank_values=True):
        if key == "command":
            command.append(value)
        elif key in flags or key in aliases:
            name = aliases.get(key, key)
            flags[name] = flags[name] or _query_bool(key, value)
    if flags["tty"]:
        flags["stderr"] = False
    opts = ExecOptions(command=tuple(command), **flags)
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise ValueError("you must specify at least 1 of stdin, stdout, stderr")
    return opts


# --- SPDY streams -----------------------------------------------------------------------------

STREAM_TYPE_HEADER = "streamtype"

# Header names map to one value, NUL-joined values (SPDY/3's wire form) or a list of values.
Headers = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]


def header_value(headers: Headers, name: str) -> str | None:
    """First value of header ``name`` (any case), as Go's ``Header.Get`` gives it."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    wanted = name.lower()
    for key, value in items:
        if key.lower() == wanted:
            if not isinstance(value, str):
                if not value:
                    continue
                value = value[0]
            return value.split("\0", 1)[0]
    return None


class StreamRole(enum.Enum):
    """The ``streamType`` of a remote-command SPDY stream."""

    ERROR = "error"
    STDIN = "stdin"
    STDOUT = "stdout"
    STDERR = "stderr"
    RESIZE = "resize"


def classify_stream(headers: Headers) -> StreamRole:
    """The role a SYN_STREAM's headers announce; ProtocolError if missing or unknown."""
    kind = header_value(headers, STREAM_TYPE_HEADER)
    if not kind:
        raise ProtocolError("stream without a streamType header")
    try:
        return StreamRole(kind)
    except ValueError:
        raise ProtocolError(f"unexpected stream type: {kind!r}") from None


def expected_streams(protocol: RemoteCommandProtocol, options: ExecOptions) -> frozenset[StreamRole]:
    """The SPDY streams a client opens for ``options`` (client-go's createStreams, every version).

    Always an error stream; one per requested std stream; no stderr with a tty (one output);
    a resize stream with a tty from v3 on.
    """
    roles = {StreamRole.ERROR}
    if options.stdin:
        roles.add(StreamRole.STDIN)
    if options.stdout:
        roles.add(StreamRole.STDOUT)
    if options.stderr and not options.tty:
        roles.add(StreamRole.STDERR)
    if options.tty and protocol.resize:
        roles.add(StreamRole.RESIZE)
    return frozenset(roles)


class ExecStreams:
    """Collects the SPDY streams of one exec/attach session until all expected ones are open.

    The server must not start copying before ``complete``: clients open every stream first and
    only then send data (kubernetes issue 16373). If the set is not complete within
    ``STREAM_CREATION_TIMEOUT`` the session is abandoned. ``add`` refuses unknown, unexpected
    and duplicate streams; the caller resets that one stream (the kubelet merely ignores an
    unknown type) and keeps waiting for the rest.
    """

    def __init__(self, protocol: RemoteCommandProtocol, options: ExecOptions) -> None:
        self.protocol = protocol
        self.expected = expected_streams(protocol, options)
        self.streams: dict[StreamRole, int] = {}

    def add(self, stream_id: int, headers: Headers) -> StreamRole:
        role = classify_stream(headers)
        if role in self.streams:
            raise ProtocolError(f"duplicate {role.value} stream {stream_id}"
                                f" (already stream {self.streams[role]})")
        if role not in self.expected:
            raise ProtocolError(f"{role.value} stream {stream_id} was not requested")
        self.streams[role] = stream_id
        return role

    @property
    def complete(self) -> bool:
        return len(self.streams) == len(self.expected)

    @property
    def missing(self) -> frozenset[StreamRole]:
        return self.expected - self.streams.keys()

    def stream_id(self, role: StreamRole) -> int | None:
        return self.streams.get(role)

    def role_of(self, stream_id: int) -> StreamRole | None:
        return next((r for r, sid in self.streams.items() if sid == stream_id), None)


# --- final status on the error stream/channel -------------------------------------------------


def _go_json(obj: object) -> bytes:
    """Compact JSON the way Go's encoding/json writes it (so our bytes match the kubelet's)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    # Lone surrogates (undecodable bytes smuggled into a str) cannot be UTF-8; Go writes U+FFFD.
    return text.encode("utf-8", "replace")


SUCCESS_STATUS_JSON = b'{"metadata":{},"status":"Success"}'


def _exit_code(code: int) -> int:
    # subprocess reports death by signal N as -N; runc and shells report 128+N, and client-go
    # parses the code as an unsigned byte, so that is the form that goes on the wire.
    if code < 0:
        code = 128 - code
    if code > 255:
        raise ValueError(f"exit code {code} does not fit in 0..255")
    return code


def exit_message(code: int, command: Sequence[str]) -> str:
    """The status message for a non-zero exit, worded as containerd and CRI-O word it."""
    # Go's %v of a []string: elements space-separated inside brackets, unquoted.
    return (f"command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}")


def exit_status_json(code: int, command: Sequence[str]) -> bytes:
    """v4+ error-stream payload for a finished command.

    0 is ``Success``; anything else is a ``Failure`` with reason ``NonZeroExitCode`` and an
    ``ExitCode`` cause holding the decimal code, which is what client-go turns into the exit
    status kubectl/crictl return. Negative codes (killed by signal) become 128+signal.
    """
    code = _exit_code(code)
    if code == 0:
        return SUCCESS_STATUS_JSON
    return _go_json({
        "metadata": {}, "status": "Failure", "message": exit_message(code, command),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    })


def internal_error_message(message: str) -> str:
    return f"Internal error occurred: {message}"


def error_status_json(message: str) -> bytes:
    """v4+ error-stream payload when the session failed for another reason (an InternalError).

    client-go shows ``status.message`` to the user: "Internal error occurred: <message>".
    """
    return _go_json({
        "metadata": {}, "status": "Failure", "message": internal_error_message(message),
        "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500,
    })


def exit_payload(protocol: RemoteCommandProtocol, code: int, command: Sequence[str]) -> bytes:
    """What to write on the error stream when the command exits, for this protocol version.

    Before v4 the error stream is plain text and success writes nothing at all.
    """
    if protocol.status_json:
        return exit_status_json(code, command)
    code = _exit_code(code)
    return b"" if code == 0 else exit_message(code, command).encode()


def error_payload(protocol: RemoteCommandProtocol, message: str) -> bytes:
    """What to write on the error stream when the session fails (not an exit code)."""
    if protocol.status_json:
        return error_status_json(message)
    return internal_error_message(message).encode("utf-8", "replace")


# --- terminal resize messages -----------------------------------------------------------------


class TerminalSize(NamedTuple):
    width: int
    height: int


class ResizeError(ProtocolError):
    """Bad resize data. ``sizes`` holds the good messages decoded before the bad one."""

    def __init__(self, message: str, sizes: Sequence[TerminalSize] = ()) -> None:
        super().__init__(message)
        self.sizes = list(sizes)


def encode_resize(width: int, height: int) -> bytes:
    """One resize message as client-go's json.Encoder writes it (the client side, for tests)."""
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode() + b"\n"


def _size_field(obj: dict[str, object], name: str) -> int:
    # Go's decoder matches field names case-insensitively; the last matching key wins, a
    # missing field or null stays 0, anything but an integer 0..65535 (uint16) is an error.
    value: object = None
    for key, val in obj.items():
        if key.lower() == name:
            value = val
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be an integer in 0..65535, got {value!r}")
    return value


class ResizeDecoder:
    """Incremental decoder for the resize stream/channel: a sequence of JSON objects.

    client-go writes ``{"Width":W,"Height":H}\\n`` per resize, but transports split and join
    messages freely, so objects may arrive in pieces or several per chunk. Each complete object
    is parsed as it closes; a partial one waits for more bytes. The kubelet stops reading
    resizes at the first bad object; here the error is sticky: every later ``feed`` raises too.
    """

    MAX_OBJECT = 4096  # a real message is ~30 bytes; refuse to buffer an endless one

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already scanned for the end of the current object
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._failed: str | None = None

    @property
    def pending(self) -> int:
        """Bytes of an unfinished object held back (0 between objects)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[TerminalSize]:
        if self._failed is not None:
            raise ResizeError(self._failed)
        self._buf += data
        sizes: list[TerminalSize] = []
        try:
            while (end := self._object_end()) is not None:
                raw = bytes(self._buf[:end])
                del self._buf[:end]
                self._scan = 0
                sizes.append(self._parse(raw))
            if len(self._buf) > self.MAX_OBJECT:
                raise ValueError(f"resize object longer than {self.MAX_OBJECT} bytes")
        except ValueError as exc:
            self._failed = f"bad resize message: {exc}"
            raise ResizeError(self._failed, sizes) from None
        return sizes

    def _object_end(self) -> int | None:
        """Index just past the next complete top-level object, dropping whitespace before it."""
        buf = self._buf
        if self._scan == 0:
            start = len(buf) - len(bytes(buf).lstrip(b" \t\r\n"))
            del buf[:start]
            if not buf:
                return None
            if buf[0] != 0x7B:  # "{"
                raise ValueError(f"expected a JSON object, got {bytes(buf[:16])!r}")
        for i in range(self._scan, len(buf)):
            c = buf[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif c == 0x5C:  # backslash
                    self._escape = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in (0x7B, 0x5B):
                self._depth += 1
            elif c in (0x7D, 0x5D):
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        self._scan = len(buf)
        return None

    @staticmethod
    def _parse(raw: bytes) -> TerminalSize:
        obj = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return TerminalSize(_size_field(obj, "width"), _size_field(obj, "height"))


def parse_resize(data: bytes) -> list[TerminalSize]:
    """All resize messages in ``data``, which must end on an object boundary."""
    decoder = ResizeDecoder()
    sizes = decoder.feed(data)
    if decoder.pending:
        raise ResizeError("truncated resize message", sizes)
    return sizes


# --- WebSocket channel framing ----------------------------------------------------------------


class Channel(enum.IntEnum):
    """Remote-command WebSocket channels: the std streams keep their POSIX fd numbers."""

    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4


CLOSE_SIGNAL = 255  # v5: [255, n] half-closes channel n


@dataclass(frozen=True, slots=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClose:
    """v5 CLOSE signal: the peer will send nothing more on ``channel`` (stdin EOF)."""

    channel: int


_BASE64_MAX_CHANNEL = 0x7F - 0x30  # the channel digit must stay one ASCII character


class ChannelCodec:
    """Encodes/decodes one WebSocket message <-> (channel, payload) for a channel protocol.

    Binary protocols (channel.k8s.io, v4, v5): ``[channel] + data`` in a binary message.
    base64 protocols: a text message ``chr(0x30 + channel) + base64(data)``. The same framing
    serves port-forward over WebSocket (v4.channel.k8s.io / v4.base64.channel.k8s.io).
    """

    def __init__(self, *, base64: bool = False, close_signal: bool = False) -> None:
        self.base64 = base64
        self.close_signal = close_signal

    @classmethod
    def for_protocol(cls, name: str) -> ChannelCodec:
        proto = remotecommand_protocol(name)
        return cls(base64=proto.base64, close_signal=proto.close_signal)

    def encode(self, channel: int, data: bytes) -> bytes | str:
        """One message; a str means "send as a TEXT message", bytes "send as BINARY"."""
        if self.base64:
            if not 0 <= channel <= _BASE64_MAX_CHANNEL:
                raise ValueError(f"channel {channel} has no base64 channel character")
            return chr(0x30 + channel) + base64.b64encode(data).decode("ascii")
        if not 0 <= channel < CLOSE_SIGNAL:
            raise ValueError(f"channel {channel} out of range 0..254")
        return bytes((channel,)) + data

    def encode_close(self, channel: int) -> bytes:
        """The v5 CLOSE signal for ``channel`` (a client half-closing its stdin sends [255, 0])."""
        if not self.close_signal:
            raise ValueError("this protocol has no CLOSE signal")
        if not 0 <= channel < CLOSE_SIGNAL:
            raise ValueError(f"channel {channel} out of range 0..254")
        return bytes((CLOSE_SIGNAL, channel))

    def decode(self, message: bytes | str) -> ChannelData | ChannelClose | None:
        """The channel and payload of one received message; None for an empty message.

        Like the kubelet, either frame type is accepted whatever the protocol. The channel is
        not range-checked here: the kubelet drops data for channels it did not open, and so
        should the caller. ProtocolError for a malformed CLOSE (the kubelet then ends the
        connection) or bad base64 (the kubelet drops that one message).
        """
        raw = message.encode("utf-8") if isinstance(message, str) else message
        if not raw:
            return None
        if self.close_signal and raw[0] == CLOSE_SIGNAL:
            if len(raw) != 2:
                raise ProtocolError(f"CLOSE signal must name exactly one channel, got {len(raw) - 1} bytes")
            return ChannelClose(raw[1])
        if not self.base64:
            return ChannelData(raw[0], bytes(raw[1:]))
        channel = (raw[0] - 0x30) & 0xFF  # byte arithmetic, as Go does it
        # Go's StdEncoding skips CR/LF and insists on padding; so does validate=True.
        payload = raw[1:].replace(b"\r", b"").replace(b"\n", b"")
        try:
            return ChannelData(channel, base64.b64decode(payload, validate=True))
        except binascii.Error as exc:
            raise ProtocolError(f"bad base64 on channel {channel}: {exc}") from None


def websocket_ready_channel(options: ExecOptions) -> Channel:
    """Where the kubelet writes an empty message right after the upgrade, to tell the client
    the session is live: the lowest channel the server writes to (stdout, else stderr, else error).
    """
    if options.stdout:
        return Channel.STDOUT
    if options.stderr:
        return Channel.STDERR
    return Channel.ERROR
