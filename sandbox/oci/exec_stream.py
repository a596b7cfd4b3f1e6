"""An interactive ``runc exec``: the process behind a streaming Exec (kubectl/crictl exec -it).

Without a terminal the command's stdin, stdout and stderr are pipes of ours (runc hands them to
the command). With one, runc's stdio is the slave of a pty of ours: runc (in the foreground)
creates the container's pty and relays between the two, and on SIGWINCH copies our pty's size
to the container's. (runc takes a console socket only when it detaches, and a detached exec
leaves nobody to report the exit code.) Either way runc exits with the command's status.

Like ExecSync, the command gets the container's own process settings (exec_process_spec), and
``kill()`` ends the exec's whole process tree (a client that goes away must not leave it running).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import tempfile
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sandbox.fdio import write_all
from sandbox.oci.exec_sync import exec_process_spec, kill_exec_tree
from sandbox.oci.runc import RUNTIME_ENV, global_args

_READ_CHUNK = 1 << 15


class ExecStream:
    """A running exec. Read ``stdout``/``stderr`` (stderr is None with a tty), write with
    ``write_stdin``, then ``await wait()`` for the exit code."""

    def __init__(self, proc: asyncio.subprocess.Process, scratch: Path, master: int | None
                 ) -> None:
        self._proc = proc
        self._scratch = scratch
        self._master = master
        self.tty = master is not None
        self.stdout = asyncio.StreamReader()
        self.stderr: asyncio.StreamReader | None = None if self.tty else asyncio.StreamReader()
        self._pumps: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        if master is not None:
            os.set_blocking(master, False)
            loop.add_reader(master, self._on_master_readable)
        else:
            assert proc.stdout is not None and proc.stderr is not None
            assert self.stderr is not None
            self._pumps = [loop.create_task(_pump(proc.stdout, self.stdout)),
                           loop.create_task(_pump(proc.stderr, self.stderr))]

    @classmethod
    async def start(cls, runtime_path: Path, runtime_root: Path, ctr_id: str,
                    argv: Sequence[str], *, container_process: Mapping[str, Any], tty: bool,
                    scratch_dir: Path, width: int = 0, height: int = 0) -> ExecStream:
        process = exec_process_spec(container_process, argv)
        process["terminal"] = tty
        width, height = (width, height) if width > 0 and height > 0 else (80, 24)
        if tty:
            # The container's pty gets its size when it is created. Without one it is 0x0
            # until runc first copies ours over, which happens after the command is running:
            # a command quick enough (or one fed its input early) saw no size at all.
            process["consoleSize"] = {"width": width, "height": height}
        scratch = Path(await asyncio.to_thread(_mkscratch, scratch_dir))
        master = slave = -1
        try:
            (scratch / "process.json").write_text(json.dumps(process))
            cmd = [str(runtime_path), *global_args(runtime_root), "exec",
                   "--process", str(scratch / "process.json"),
                   "--pid-file", str(scratch / "pid"), *(["--tty"] if tty else []), ctr_id]
            pipe = asyncio.subprocess.PIPE
            if tty:
                master, slave = os.openpty()
                _set_size(master, width, height)
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=slave, stdout=slave, stderr=slave, env=RUNTIME_ENV,
                    start_new_session=True)
                os.close(slave)
                slave = -1
            else:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, stdin=pipe, stdout=pipe, stderr=pipe, env=RUNTIME_ENV,
                    start_new_session=True)
            return cls(proc, scratch, master if tty else None)
        except BaseException:
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def _on_master_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the last process holding the pty's other side is gone
            data = b""
        if data:
            self.stdout.feed_data(data)
            return
        asyncio.get_running_loop().remove_reader(self._master)
        self.stdout.feed_eof()

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            await write_all(self._master, data)  # waits while the pty's input queue is full
            return
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            return
        stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await stdin.drain()

    def close_stdin(self) -> None:
        """EOF on the command's stdin (with a tty: ^D, as a terminal would send it)."""
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")
        elif self._proc.stdin is not None:
            self._proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self._master is None or width <= 0 or height <= 0:
            return
        _set_size(self._master, width, height)
        # runc relays the size to the container's pty on SIGWINCH (our pty is not its
        # controlling terminal, so the kernel would not send it).
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGWINCH)

    async def wait(self) -> int:
        """The command's exit code (runc exits with it); then everything is released."""
        try:
            code = await self._proc.wait()
            for pump in self._pumps:
                await pump
            return code if code >= 0 else 128 - code
        finally:
            self._release()

    async def kill(self) -> None:
        """The client went away: kill the exec's whole tree, then release everything."""
        try:
            await kill_exec_tree(self._proc, self._scratch / "pid")
            for pump in self._pumps:
                pump.cancel()
        finally:
            self._release()

    def _release(self) -> None:
        if self._master is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
            if not self.stdout.at_eof():
                self.stdout.feed_eof()
        shutil.rmtree(self._scratch, ignore_errors=True)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamReader) -> None:
    while chunk := await src.read(_READ_CHUNK):
        dst.feed_data(chunk)
    dst.feed_eof()


def _mkscratch(parent: Path) -> str:
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="pycri-exec-", dir=parent)


def _set_size(fd: int, width: int, height: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ,
                    struct.pack("HHHH", min(height, 0xFFFF), min(width, 0xFFFF), 0, 0))
