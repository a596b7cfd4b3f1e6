"""NRI's connection multiplexer: framing and demultiplexing, sans-IO.

An NRI plugin and the runtime share one unix connection (the "trunk") that carries several
logical connections (github.com/containerd/nri pkg/net/multiplex, v0.12.2). Each frame on the
trunk is an 8-byte header, both fields big-endian uint32, then the payload:

    0..4   connection id (0 is reserved and never opened)
    4..8   payload length

Opening a logical connection sends nothing: both ends simply use the same well-known ids. NRI
uses two, one ttrpc session each, so each side is a ttrpc client on one and a server on the
other, and ttrpc's odd/even stream id rule never has to tell the two directions apart:

    1  PluginServiceConn: the runtime calls the plugin (Configure, Synchronize, events)
    2  RuntimeServiceConn: the plugin calls the runtime (RegisterPlugin, UpdateContainers)

Frames for a connection id that is not open are dropped, as the Go mux does. The Go mux caps a
payload at one ttrpc frame (10 + 4 MiB) when writing; a longer one here means a broken or
hostile peer, and ends the trunk.

How a message is cut into frames matters for Go peers. The Go side reads a logical connection
through ttrpc's 4 KiB bufio.Reader, and the mux hands over one whole frame per Read or fails
with ENOMEM when the reader's buffer is smaller than the frame. Go's own writer (ttrpc's 4 KiB
bufio.Writer over the mux) therefore emits each ttrpc message as at most two frames: the first
4096 bytes (header included), then the rest in one piece, which the reader takes straight into
the payload buffer. ``encode`` cuts messages the same way, and callers pass one whole ttrpc
message per call so that no frame straddles two messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

HEADER = struct.Struct(">II")
HEADER_LENGTH = HEADER.size  # 8
RESERVED_CONN_ID = 0
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2
MAX_CONN_ID = 0xFFFFFFFF
# One ttrpc frame: its 10-byte header and the largest payload ttrpc allows.
MAX_PAYLOAD = 10 + (4 << 20)
# The size of the bufio buffers on both ends of Go's ttrpc channel.
FIRST_CHUNK = 4096


class MuxError(ValueError):
    """A trunk that cannot go on: an oversized frame, or EOF in the middle of one."""


class Delivery(NamedTuple):
    conn_id: int
    data: bytes


def encode(conn_id: int, message: bytes) -> bytes:
    """The frames that carry one message on ``conn_id``, cut as Go's ttrpc writer cuts them."""
    if not RESERVED_CONN_ID < conn_id <= MAX_CONN_ID:
        raise MuxError(f"connection id {conn_id} is reserved or does not fit 32 bits")
    if not message:
        return b""
    chunks = [message[:FIRST_CHUNK]]
    rest = message[FIRST_CHUNK:]
    while rest:
        chunks.append(rest[:MAX_PAYLOAD])
        rest = rest[MAX_PAYLOAD:]
    return b"".join(HEADER.pack(conn_id, len(chunk)) + chunk for chunk in chunks)


@dataclass
class Demultiplexer:
    """Incremental parser for the trunk: ``receive_data`` returns what each open connection got."""

    _buf: bytearray = field(default_factory=bytearray)
    _open: set[int] = field(default_factory=set)

    def open(self, conn_id: int) -> None:
        if not RESERVED_CONN_ID < conn_id <= MAX_CONN_ID:
            raise MuxError(f"connection id {conn_id} is reserved or does not fit 32 bits")
        self._open.add(conn_id)

    def close(self, conn_id: int) -> None:
        self._open.discard(conn_id)

    def receive_data(self, data: bytes) -> list[Delivery]:
        self._buf += data
        out: list[Delivery] = []
        while len(self._buf) >= HEADER_LENGTH:
            conn_id, length = HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise MuxError(f"frame of {length} bytes on connection {conn_id} exceeds {MAX_PAYLOAD}")
            end = HEADER_LENGTH + length
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER_LENGTH:end])
            del self._buf[:end]
            if conn_id in self._open and payload:
                out.append(Delivery(conn_id, payload))
        return out

    def check_eof(self) -> None:
        if self._buf:
            raise MuxError(f"trunk closed inside a frame ({len(self._buf)} bytes of it received)")
