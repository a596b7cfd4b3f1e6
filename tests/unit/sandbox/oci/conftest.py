"""Process helpers shared by the OCI tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

WAIT = 30.0  # generous bound on waits; never a timing assertion


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie (an orphaned conmon is pid 1's to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_gone(pid: int) -> None:
    """Wait for any process (not only a child) to exit: a pidfd turns readable at exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        async with asyncio.timeout(WAIT):
            await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@pytest.fixture
def wait_exit() -> Callable[[int], Coroutine[Any, Any, None]]:
    return wait_gone


@pytest.fixture
def is_gone() -> Callable[[int], bool]:
    return gone
