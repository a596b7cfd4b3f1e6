"""The client side of a ttrpc connection as a state machine: calls out, outcomes in, sans-IO.

Only unary calls (one Request, one Response per stream), which is all NRI uses. Rules, as
ttrpc v1.2.7's Go client keeps them:

- Stream ids are odd, from 1 up in steps of 2, never reused; the server refuses anything else.
- A request longer than 4 MiB is refused here with RESOURCE_EXHAUSTED before anything is sent.
- A Response settles its stream: OK gives the payload, any other code a TtrpcError. Anything
  else on a pending stream (a data frame, an unknown type) fails that call as a protocol error;
  an oversized frame fails it with RESOURCE_EXHAUSTED. Frames for streams not pending (late
  answers to calls given up on) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from cri.nri.api import ttrpc_pb2
from cri.nri.ttrpc_frames import (
    MAX_MESSAGE_LENGTH,
    MAX_STREAM_ID,
    FrameDecoder,
    FrameError,
    MessageType,
    OversizedFrame,
    encode_frame,
    oversized,
)
from cri.nri.ttrpc_status import ConnectionClosed, TtrpcError, parse


@dataclass(frozen=True)
class Replied:
    stream_id: int
    payload: bytes


@dataclass(frozen=True)
class Failed:
    stream_id: int
    error: TtrpcError


Outcome = Replied | Failed


@dataclass
class ClientConnection:
    _decoder: FrameDecoder = field(default_factory=FrameDecoder)
    _next_id: int = 1
    _pending: set[int] = field(default_factory=set)

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    def request(self, service: str, method: str, payload: bytes, *, timeout_ns: int = 0,
                metadata: Iterable[tuple[str, str]] = ()) -> tuple[int, bytes]:
        """Start a call: its stream id and the frame to send."""
        body = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_ns,
            metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in metadata],
        ).SerializeToString()
        if len(body) > MAX_MESSAGE_LENGTH:
            raise TtrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, oversized(len(body)))
        if self._next_id > MAX_STREAM_ID:
            raise TtrpcError(grpc.StatusCode.UNAVAILABLE, "stream ids exhausted: reconnect")
        stream_id = self._next_id
        self._next_id += 2
        self._pending.add(stream_id)
        return stream_id, encode_frame(stream_id, MessageType.REQUEST, body)

    def forget(self, stream_id: int) -> None:
        """Give up on a call (timed out, cancelled); its answer, if one comes, is dropped."""
        self._pending.discard(stream_id)

    def receive_data(self, data: bytes) -> list[Outcome]:
        self._decoder.feed(data)
        outcomes: list[Outcome] = []
        while (frame := self._decoder.next_frame()) is not None:
            if frame.stream_id not in self._pending:
                continue
            self._pending.discard(frame.stream_id)
            if isinstance(frame, OversizedFrame):
                error = TtrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, oversized(frame.length))
                outcomes.append(Failed(frame.stream_id, error))
            elif frame.type != MessageType.RESPONSE:
                error = TtrpcError(grpc.StatusCode.INTERNAL,
                                   f"protocol error: message type {frame.type} on a unary call")
                outcomes.append(Failed(frame.stream_id, error))
            else:
                outcomes.append(_settle(frame.stream_id, frame.payload))
        return outcomes

    def connection_lost(self) -> list[Failed]:
        """The peer closed the connection: every pending call fails."""
        reason = "ttrpc: closed"
        try:
            self._decoder.check_eof()
        except FrameError as exc:
            reason = f"ttrpc: closed ({exc})"
        failed = [Failed(sid, ConnectionClosed(reason)) for sid in sorted(self._pending)]
        self._pending.clear()
        return failed


def _settle(stream_id: int, payload: bytes) -> Outcome:
    try:
        response = parse(ttrpc_pb2.Response, payload, grpc.StatusCode.INTERNAL, "undecodable response")
    except TtrpcError as exc:
        return Failed(stream_id, exc)
    if response.status.code != 0:
        return Failed(stream_id, TtrpcError.from_status(response.status))
    return Replied(stream_id, response.payload)
