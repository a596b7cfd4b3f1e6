"""Attach to a running container through its conmon (kubectl attach, crictl attach).

conmon binds a SOCK_SEQPACKET socket at <bundle>/attach. What it sends us comes in packets
whose first byte names the stream (2 stdout, 3 stderr; the buffer size is conmon's 8192 + 1);
what we send is the container's stdin as it is. Closing our end detaches without touching the
container. Resizes go through the ctl fifo (<bundle>/ctl): "1 <height> <width>\\n". Several
attach sessions at once are conmon's business: it fans output out to every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

STDOUT, STDERR = 2, 3
_PACKET_MAX = 8192 + 1
_RESIZE = 1  # conmon ctl message type


class AttachError(OSError):
    pass


class Attach:
    """One attach session: ``stdout``/``stderr`` readers, ``write_stdin``, ``resize``."""

    def __init__(self, sock: socket.socket, ctl: Path) -> None:
        self._sock = sock
        self._ctl = ctl
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, bundle: Path) -> Attach:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        # A unix socket path is limited to 108 bytes; /proc/self/fd/N reaches a long one.
        dir_fd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dir_fd}/attach")
        except OSError as exc:
            sock.close()
            raise AttachError(exc.errno, f"cannot attach through {bundle}/attach: "
                                         f"{exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        return cls(sock, bundle / "ctl")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                packet = await loop.sock_recv(self._sock, _PACKET_MAX)
                if not packet:
                    break
                target = {STDOUT: self.stdout, STDERR: self.stderr}.get(packet[0])
                if target is not None and len(packet) > 1:
                    target.feed_data(packet[1:])
        except OSError:
            pass
        finally:
            self.stdout.feed_eof()
            self.stderr.feed_eof()

    async def write_stdin(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self._sock, data)

    def close_stdin(self) -> None:
        """Half-close: conmon then closes the container's stdin if it was started stdin_once."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def resize(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            return
        msg = f"{_RESIZE} {min(height, 1000)} {min(width, 1000)}\n".encode()
        with contextlib.suppress(OSError):
            fd = os.open(self._ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.write(fd, msg)
            finally:
                os.close(fd)

    async def wait(self) -> None:
        """Until conmon closes our end (the container exited); output stays readable."""
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        """Detach; the container keeps running."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._sock.close()
