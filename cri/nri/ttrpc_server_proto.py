"""The server side of a ttrpc connection as a state machine: requests in, responses out, sans-IO.

Only unary methods, which is all NRI defines. The checks run in the order ttrpc v1.2.7's Go
server applies them, and each broken frame costs only its own stream, answered with a status
on the stream id it came with:

1. a payload over 4 MiB: skipped, RESOURCE_EXHAUSTED;
2. an even stream id (ids of client-opened streams are odd): INVALID_ARGUMENT;
3. a data frame: INVALID_ARGUMENT, since no unary stream takes data;
4. a request whose id is not above every earlier one: INVALID_ARGUMENT; one whose envelope
   does not decode: INVALID_ARGUMENT;
5. responses from the client and types this side does not know: ignored (future types).

Every stream gets at most one Response: whatever answers first (an error above or the
handler's ``respond``) ends it, and a later ``respond`` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from cri.nri.api import ttrpc_pb2
from cri.nri.ttrpc_frames import (
    MAX_MESSAGE_LENGTH,
    FrameDecoder,
    FrameError,
    MessageType,
    OversizedFrame,
    encode_frame,
    oversized,
)
from cri.nri.ttrpc_status import TtrpcError, parse


@dataclass(frozen=True)
class RequestReceived:
    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_ns: int  # 0: no deadline
    metadata: tuple[tuple[str, str], ...]


@dataclass
class ServerConnection:
    _decoder: FrameDecoder = field(default_factory=FrameDecoder)
    _last_id: int = 0
    _active: set[int] = field(default_factory=set)
    _outbox: list[bytes] = field(default_factory=list)

    @property
    def active(self) -> frozenset[int]:
        """Streams with a request received and no response sent yet."""
        return frozenset(self._active)

    def receive_data(self, data: bytes) -> list[RequestReceived]:
        self._decoder.feed(data)
        requests: list[RequestReceived] = []
        while (frame := self._decoder.next_frame()) is not None:
            sid = frame.stream_id
            if isinstance(frame, OversizedFrame):
                self._reject(sid, grpc.StatusCode.RESOURCE_EXHAUSTED, oversized(frame.length))
            elif sid % 2 != 1:
                self._reject(sid, grpc.StatusCode.INVALID_ARGUMENT,
                             "StreamID must be odd for client initiated streams")
            elif frame.type == MessageType.DATA:
                self._reject(sid, grpc.StatusCode.INVALID_ARGUMENT, "data message on a unary stream")
            elif frame.type == MessageType.REQUEST:
                if sid <= self._last_id:
                    self._reject(sid, grpc.StatusCode.INVALID_ARGUMENT,
                                 "StreamID cannot be re-used and must increment")
                    continue
                self._last_id = sid
                try:
                    request = parse(ttrpc_pb2.Request, frame.payload, grpc.StatusCode.INVALID_ARGUMENT,
                                    "unmarshal request error")
                except TtrpcError as exc:
                    self._reject(sid, exc.code, exc.message)
                    continue
                self._active.add(sid)
                requests.append(RequestReceived(
                    sid, request.service, request.method, request.payload, request.timeout_nano,
                    tuple((kv.key, kv.value) for kv in request.metadata)))
        return requests

    def respond(self, stream_id: int, payload: bytes) -> bool:
        """Answer a request with OK and ``payload``; False if the stream was answered already.

        A reply too long for a frame becomes RESOURCE_EXHAUSTED (ttrpc's Go server would drop
        the whole connection instead)."""
        body = _response(ttrpc_pb2.Status(code=0), payload)
        if len(body) > MAX_MESSAGE_LENGTH:
            return self.respond_error(stream_id, TtrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                            oversized(len(body))))
        return self._finish(stream_id, body)

    def respond_error(self, stream_id: int, error: TtrpcError) -> bool:
        return self._finish(stream_id, _response(error.to_status(), b""))

    def frames_to_send(self) -> list[bytes]:
        """Whole frames, one per list entry: a multiplexed transport needs their boundaries."""
        out, self._outbox = self._outbox, []
        return out

    def connection_lost(self) -> str:
        """The client went away: every active stream is dropped. Says how the connection ended."""
        self._active.clear()
        try:
            self._decoder.check_eof()
        except FrameError as exc:
            return str(exc)
        return "closed by the client"

    def _finish(self, stream_id: int, body: bytes) -> bool:
        if stream_id not in self._active:
            return False
        self._active.discard(stream_id)
        self._outbox.append(encode_frame(stream_id, MessageType.RESPONSE, body))
        return True

    def _reject(self, stream_id: int, code: grpc.StatusCode, message: str) -> None:
        self._active.discard(stream_id)
        body = _response(TtrpcError(code, message).to_status(), b"")
        self._outbox.append(encode_frame(stream_id, MessageType.RESPONSE, body))


def _response(status: ttrpc_pb2.Status, payload: bytes) -> bytes:
    return ttrpc_pb2.Response(status=status, payload=payload).SerializeToString()
