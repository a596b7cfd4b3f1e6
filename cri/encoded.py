"""Responses that are already protobuf bytes.

ListContainers is called every second by the kubelet for every container on the node; building
330 messages with their label maps each time is most of its cost. Each container keeps the
encoded form of its list entry (rebuilt only when its state changes), and the response is
those entries joined: a repeated message field is nothing but its entries one after another,
each as tag + length + bytes. The interceptor passes an ``Encoded`` reply through unserialised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class Encoded(bytes):
    """A reply that is already the serialised response message."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def repeated_entry(field_number: int, message: bytes) -> bytes:
    """One element of a repeated message field (wire type 2), ready to be concatenated."""
    return _varint(field_number << 3 | 2) + _varint(len(message)) + message


def join(entries: Iterable[bytes]) -> Encoded:
    return Encoded(b"".join(entries))


def passthrough(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serializer is None:
        return None
    ser = serializer

    def serialize(reply: Any) -> bytes:
        # grpc wants exactly bytes, not a subclass: one copy, far cheaper than encoding.
        return bytes(reply) if isinstance(reply, Encoded) else ser(reply)

    return serialize
