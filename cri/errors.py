"""The CRIError hierarchy: the one vocabulary the daemon's domain code uses for failures.

Domain code raises these; the server interceptor is the only place that turns them into gRPC
status codes (containerd's errdefs + errgrpc split). Third-party and OS exceptions are translated
into these at the boundary where they happen, with ``raise ... from exc``.
"""

from __future__ import annotations

import grpc


class CRIError(Exception):
    """A failure a CRI client can act on; ``code`` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CRIError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CRIError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(CRIError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(CRIError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(CRIError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(CRIError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(CRIError):
    code = grpc.StatusCode.UNIMPLEMENTED


class ResourceExhausted(CRIError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(CRIError):
    code = grpc.StatusCode.INTERNAL
