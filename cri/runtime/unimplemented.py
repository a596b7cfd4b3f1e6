"""RPCs a later piece of work implements answer UNIMPLEMENTED with a message naming the RPC
(the generated base servicer's message does not say which one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cri.api import api_pb2
from cri.errors import Unimplemented


def _unary(name: str) -> Any:
    async def method(self: Any, request: Any, context: Any) -> Any:
        raise Unimplemented(f"{name} is not implemented by pycri yet")

    return method


def _stream(name: str) -> Any:
    async def method(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
        raise Unimplemented(f"{name} is not implemented by pycri yet")
        yield  # pragma: no cover - makes this an async generator

    return method


def fill_unimplemented(cls: type, service: str) -> None:
    """Give ``cls`` an UNIMPLEMENTED handler for every RPC of ``service`` it does not define."""
    for m in api_pb2.DESCRIPTOR.services_by_name[service].methods:
        if m.name in cls.__dict__:
            continue
        make = _stream if m.server_streaming else _unary
        setattr(cls, m.name, make(m.name))
