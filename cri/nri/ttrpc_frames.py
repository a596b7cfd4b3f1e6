"""ttrpc message frames: byte layout, limits and an incremental decoder, sans-IO.

ttrpc (github.com/containerd/ttrpc, PROTOCOL.md; v1.2.7 is what NRI v0.12.2 uses) frames every
message with 10 bytes, all integers big-endian:

    0..4   payload length (uint32), the header not included
    4..8   stream id (uint32): odd for streams the client opens, even for the server's (which
           no ttrpc version opens yet)
    8      message type: 1 request, 2 response, 3 data
    9      flags, by type: 0x1 remote closed, 0x2 remote open (requests), 0x4 no data (data)

A payload may be at most 4 MiB. A longer one is not a broken connection: ttrpc's Go reader skips
its bytes and answers RESOURCE_EXHAUSTED on that stream, so the decoder reports it as an
``OversizedFrame`` and drops the payload as it arrives, without buffering it. Unknown message
types are passed up as numbers: the server ignores them "for future compatibility".

This module knows nothing of streams or RPCs; ``ttrpc_client_proto`` and ``ttrpc_server_proto``
build on it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct(">IIBB")
HEADER_LENGTH = HEADER.size  # 10
MAX_MESSAGE_LENGTH = 4 << 20
MAX_STREAM_ID = 0xFFFFFFFF

FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class FrameError(ValueError):
    """A frame that cannot be encoded (an id or type out of range) or a connection cut mid-frame."""


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int  # a MessageType, or the number of a type this side does not know
    flags: int
    payload: bytes


@dataclass(frozen=True)
class OversizedFrame:
    """A frame whose payload exceeded MAX_MESSAGE_LENGTH; its bytes are skipped, not kept."""

    stream_id: int
    type: int
    length: int


def encode_frame(stream_id: int, type_: int, payload: bytes, flags: int = 0) -> bytes:
    """One frame. The caller checks the payload length first (``oversized``) where the RPC
    layer has a status to answer with; here it is a plain error."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise FrameError(f"stream id {stream_id} does not fit 32 bits")
    if not (0 <= type_ <= 0xFF and 0 <= flags <= 0xFF):
        raise FrameError(f"message type {type_} or flags {flags} do not fit a byte")
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise FrameError(oversized(len(payload)))
    return HEADER.pack(len(payload), stream_id, type_, flags) + payload


def oversized(length: int) -> str:
    """The text ttrpc's RESOURCE_EXHAUSTED status carries for a message that is too long."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE_LENGTH}"


@dataclass
class FrameDecoder:
    """Incremental parser: ``feed`` bytes cut anywhere, then pull frames with ``next_frame``."""

    _buf: bytearray = field(default_factory=bytearray)
    _skip: int = 0  # bytes of an oversized payload still to drop

    def feed(self, data: bytes) -> None:
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data

    def next_frame(self) -> Frame | OversizedFrame | None:
        if self._skip or len(self._buf) < HEADER_LENGTH:
            return None
        length, stream_id, type_, flags = HEADER.unpack_from(self._buf)
        if length > MAX_MESSAGE_LENGTH:
            rest = bytes(self._buf[HEADER_LENGTH:])
            self._buf.clear()
            self._skip = length
            self.feed(rest)  # what is already here counts against the skip
            return OversizedFrame(stream_id, _known(type_), length)
        end = HEADER_LENGTH + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER_LENGTH:end])
        del self._buf[:end]
        return Frame(stream_id, _known(type_), flags, payload)

    def check_eof(self) -> None:
        """The peer closed the connection: raise FrameError if it did so in the middle of a frame."""
        if self._skip:
            missing = self._skip
        elif len(self._buf) >= HEADER_LENGTH:
            missing = HEADER_LENGTH + HEADER.unpack_from(self._buf)[0] - len(self._buf)
        elif self._buf:
            missing = HEADER_LENGTH - len(self._buf)
        else:
            return
        raise FrameError(f"connection closed inside a frame, at least {missing} bytes short")


def _known(type_: int) -> int:
    try:
        return MessageType(type_)
    except ValueError:
        return type_
