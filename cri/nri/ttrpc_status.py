"""ttrpc call outcomes: the status a Response carries, as one typed exception.

A ttrpc Response holds a google.rpc.Status: a gRPC status code number and a message. Both sides
of pycri's ttrpc use ``TtrpcError`` for a failed call: the client raises it with the status the
server sent (or one of its own: DEADLINE_EXCEEDED on timeout, UNAVAILABLE when the connection is
gone), and a server handler raises it to choose the status it answers with.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from cri.nri.api import ttrpc_pb2

M = TypeVar("M", bound=Message)
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class TtrpcError(Exception):
    """A call that did not succeed; ``code`` is its gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def to_status(self) -> ttrpc_pb2.Status:
        return ttrpc_pb2.Status(code=self.code.value[0], message=self.message)

    @classmethod
    def from_status(cls, status: ttrpc_pb2.Status) -> TtrpcError:
        # A number outside gRPC's 0..16 is kept in the message rather than dropped.
        code = _BY_NUMBER.get(status.code)
        if code is None:
            return cls(grpc.StatusCode.UNKNOWN, f"status code {status.code}: {status.message}")
        return cls(code, status.message)


def parse(message_type: type[M], payload: bytes, code: grpc.StatusCode, what: str) -> M:
    """``payload`` as a ``message_type``; a TtrpcError with ``code`` if it does not decode."""
    message = message_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise TtrpcError(code, f"{what}: {exc}") from exc
    return message


class ConnectionClosed(TtrpcError):
    """The connection ended before the call was answered (Go ttrpc's ErrClosed)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message)
