"""write_all: everything reaches a reader that lags behind a non-blocking pipe; a reader that is
gone is an error, not a wait."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from sandbox.fdio import write_all


def test_everything_reaches_a_reader_slower_than_the_pipe() -> None:
    data = os.urandom(4 << 20)  # many times a pipe's 64 KiB
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    got = bytearray()

    def reader() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as f:
            while chunk := f.read(4096):
                got.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()

    async def scenario() -> None:
        await write_all(write_fd, data)
        os.close(write_fd)

    asyncio.run(scenario())
    thread.join()
    assert bytes(got) == data


def test_a_closed_reader_is_a_broken_pipe() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    os.close(read_fd)
    try:
        with pytest.raises(BrokenPipeError):
            asyncio.run(write_all(write_fd, b"x" * 100_000))
    finally:
        os.close(write_fd)
