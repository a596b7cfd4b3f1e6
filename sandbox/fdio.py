"""Writing to a non-blocking file descriptor (a pipe, a pty master) from the event loop."""

from __future__ import annotations

import asyncio
import os


async def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the non-blocking ``fd``, waiting for room whenever its reader
    lags behind (a full pipe, a pty whose input queue is full). Errors of os.write other than
    EAGAIN (a broken pipe, EIO) are raised."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _writable(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, on_writable)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
