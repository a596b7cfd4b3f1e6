"""The Kubernetes port-forward sub-protocol (portforward.k8s.io), sans-IO.

Over SPDY (and SPDY tunnelled through WebSocket, "SPDY/3.1+portforward.k8s.io") one connection
carries any number of forwarded TCP connections. For each, the client opens two streams with
the same ``port`` and ``requestID`` headers: ``streamType: error`` first, then
``streamType: data``. The server connects to the port once it has both, copies bytes between
the data stream and the socket, and writes a one-line message on the error stream if that fails.

Over plain WebSocket (v4.channel.k8s.io framing, see ``channels.ChannelCodec``) the ports are
fixed up front by the ``port`` query parameter (or the CRI request): port i gets data channel
2i and error channel 2i+1, and the server's first two bytes on each are the port number
(uint16, little-endian).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from urllib.parse import parse_qsl

from cri.streaming.channels import (
    BASE64_CHANNEL_V4,
    CHANNEL_V4,
    NO_SUBPROTOCOL,
    SPDY_TUNNEL_PREFIX,
    Headers,
    ProtocolError,
    header_value,
)

PORT_FORWARD_V1 = "portforward.k8s.io"
TUNNELED_PORT_FORWARD_V1 = SPDY_TUNNEL_PREFIX + PORT_FORWARD_V1

SPDY_PORT_FORWARD_PROTOCOLS: tuple[str, ...] = (PORT_FORWARD_V1,)
# The tunnel first: client-go (kubectl, crictl, critest) offers only that. The channel framing
# is what the kubelet serves, also to clients that offer no sub-protocol ("") at all.
WEBSOCKET_PORT_FORWARD_PROTOCOLS: tuple[str, ...] = (
    TUNNELED_PORT_FORWARD_V1, CHANNEL_V4, BASE64_CHANNEL_V4, NO_SUBPROTOCOL)

STREAM_TYPE_HEADER = "streamtype"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestid"


class PortStreamRole(enum.Enum):
    DATA = "data"
    ERROR = "error"


def parse_port(text: str) -> int:
    """A port as the kubelet accepts it: decimal digits only, 1..65535; ValueError otherwise."""
    # isdecimal() would let other scripts' digits through; int() would allow "+80" and " 80".
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"unable to parse {text!r} as a port")
    port = int(text)
    if port > 0xFFFF:
        raise ValueError(f"unable to parse {text!r} as a port: out of range")
    if port < 1:
        raise ValueError(f"port {text!r} must be > 0")
    return port


@dataclass(frozen=True, slots=True)
class PortForwardStream:
    stream_id: int
    role: PortStreamRole
    port: int
    request_id: str


def classify_port_forward_stream(stream_id: int, headers: Headers) -> PortForwardStream:
    """Validate a port-forward SYN_STREAM's headers; ProtocolError means reset the stream.

    Clients older than the ``requestID`` header open (error, data) back to back, so their SPDY
    stream ids are consecutive odd numbers: the kubelet pairs them by using the error stream's
    id, and the data stream's id minus 2, as the request id. That guess breaks when two such
    connections start at once, which is why the header was added.
    """
    port_text = header_value(headers, PORT_HEADER)
    if not port_text:
        raise ProtocolError(f"{PORT_HEADER!r} header is required")
    try:
        port = parse_port(port_text)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    kind = header_value(headers, STREAM_TYPE_HEADER)
    if not kind:
        raise ProtocolError("'streamType' header is required")
    try:
        role = PortStreamRole(kind)
    except ValueError:
        raise ProtocolError(f"invalid stream type {kind!r}") from None
    request_id = header_value(headers, REQUEST_ID_HEADER)
    if not request_id:
        request_id = str(stream_id if role is PortStreamRole.ERROR else stream_id - 2)
    return PortForwardStream(stream_id, role, port, request_id)


@dataclass(slots=True)
class PortForwardPair:
    """The two streams of one forwarded connection, filled in as they arrive."""

    request_id: str
    port: int
    created: float
    data_stream: int | None = None
    error_stream: int | None = None

    @property
    def complete(self) -> bool:
        return self.data_stream is not None and self.error_stream is not None


class PairError(ProtocolError):
    """A stream that does not fit its pair. ``error_stream`` is the pair's error stream, if it
    has one: the kubelet writes the message there (and the caller resets the offending stream).
    """

    def __init__(self, message: str, request_id: str, error_stream: int | None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.error_stream = error_stream


class PortForwardPairs:
    """Pairs up port-forward streams by request id.

    ``add`` returns the pair the moment it is complete and forgets it (a later stream reusing
    the id starts a new pair, as in the kubelet). Incomplete pairs stay until ``expire``: the
    caller passes its clock reading in both calls, so this class never looks at time itself.
    """

    def __init__(self) -> None:
        self._pending: dict[str, PortForwardPair] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, stream_id: int, headers: Headers, now: float = 0.0) -> PortForwardPair | None:
        stream = classify_port_forward_stream(stream_id, headers)
        pair = self._pending.setdefault(
            stream.request_id, PortForwardPair(stream.request_id, stream.port, now))
        problem = None
        if stream.port != pair.port:
            problem = f"port {stream.port} does not match the pair's port {pair.port}"
        elif stream.role is PortStreamRole.ERROR:
            if pair.error_stream is None:
                pair.error_stream = stream_id
            else:
                problem = "error stream already assigned"
        elif pair.data_stream is None:
            pair.data_stream = stream_id
        else:
            problem = "data stream already assigned"
        if problem is not None:
            raise PairError(f"error processing stream for request {pair.request_id}: {problem}",
                            pair.request_id, pair.error_stream)
        if not pair.complete:
            return None
        del self._pending[pair.request_id]
        return pair

    def expire(self, now: float, timeout: float) -> list[PortForwardPair]:
        """Remove and return the pairs still incomplete ``timeout`` after their first stream."""
        stale = [p for p in self._pending.values() if now - p.created >= timeout]
        for pair in stale:
            del self._pending[pair.request_id]
        return stale


def forward_error_message(port: int, pod_sandbox_id: str, error: str, uid: str = "") -> str:
    """The error-stream text when forwarding fails (kubectl prints it to the user).

    The CRI server passes the sandbox id as the pod and no uid, hence "uid :" in practice.
    """
    return f"error forwarding port {port} to pod {pod_sandbox_id}, uid {uid}: {error}"


def pair_timeout_message(request_id: str) -> str:
    return f"(request={request_id}) timed out waiting for streams"


# --- port-forward over WebSocket (channel framing) -------------------------------------------


def parse_port_query(query: str) -> list[int]:
    """Ports from a WebSocket port-forward URL: ``port`` repeats and may hold comma lists."""
    values = [v for k, v in parse_qsl(query.removeprefix("?"), keep_blank_values=True) if k == PORT_HEADER]
    if not values:
        raise ValueError(f"query parameter {PORT_HEADER!r} is required")
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError(f"query parameter {PORT_HEADER!r} cannot be empty")
        ports.extend(parse_port(p) for p in value.split(","))
    return ports


def data_channel(index: int) -> int:
    return 2 * index


def error_channel(index: int) -> int:
    return 2 * index + 1


def channel_target(channel: int, port_count: int) -> tuple[int, PortStreamRole] | None:
    """(port index, role) of a channel number, or None if no such channel was opened."""
    if not 0 <= channel < 2 * port_count:
        return None
    index, odd = divmod(channel, 2)
    return index, PortStreamRole.ERROR if odd else PortStreamRole.DATA


def port_prefix(port: int) -> bytes:
    """The two bytes the server writes first on both channels of ``port``."""
    return struct.pack("<H", port)


def split_port_prefix(data: bytes) -> tuple[int, bytes]:
    """Client side: the port a channel's first bytes announce, and what follows them."""
    if len(data) < 2:
        raise ProtocolError("channel data too short for its port prefix")
    return struct.unpack_from("<H", data)[0], data[2:]
