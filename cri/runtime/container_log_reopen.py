"""ReopenContainerLog: after the kubelet renames a container's log file to rotate it, conmon is
told (through its ctl fifo) to open a new one at the same path.

conmon does the reopen asynchronously, so the call waits until the new file exists (an inotify
watch on the log directory, armed before the request is sent): when it returns, the kubelet can
rely on the new file, as with CRI-O.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from cri.errors import DeadlineExceeded, FailedPrecondition, Internal
from cri.runtime.daemon import Runtime
from sandbox.oci.inotify import IN_CREATE, IN_MOVED_TO, IN_ONLYDIR, Inotify

REOPEN_LOGS = b"2 0 0\n"  # conmon's ctl message: type 2 (reopen logs), no window size
REOPEN_WAIT = 10.0


def _send(ctl: Path) -> None:
    # Non-blocking: with nobody reading (conmon gone) the open fails with ENXIO, not hangs.
    fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, REOPEN_LOGS)
    finally:
        os.close(fd)


async def reopen_container_log(rt: Runtime, ctr_id: str) -> None:
    ctr = rt.containers.lookup(ctr_id)
    if not ctr.running:
        raise FailedPrecondition(f"container {ctr.id} is not running: its log cannot be reopened")
    log_path = Path(ctr.meta.log_path)
    inotify = Inotify()
    loop = asyncio.get_running_loop()
    created = asyncio.Event()

    def on_events() -> None:
        for event in inotify.read_events():
            if event.name == log_path.name:
                created.set()

    try:
        inotify.add_watch(log_path.parent, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)
        loop.add_reader(inotify.fd, on_events)
        try:
            await asyncio.to_thread(_send, ctr.bundle / "ctl")
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise FailedPrecondition(f"container {ctr.id}: its monitor is gone") from exc
            raise Internal(f"container {ctr.id}: cannot reach conmon: {exc}") from exc
        if not await asyncio.to_thread(log_path.exists):
            try:
                await asyncio.wait_for(created.wait(), REOPEN_WAIT)
            except TimeoutError as exc:
                raise DeadlineExceeded(f"conmon did not reopen {log_path}") from exc
    finally:
        loop.remove_reader(inotify.fd)
        inotify.close()
