"""Notice container exits from conmon's exit files, through inotify, with no polling.

conmon writes the exit code as a decimal string to <exits_dir>/<container id> when the
container's init exits (128+N for a signal, -1 when it never learnt the status). It uses
g_file_set_contents(): write "<id>.XXXXXX", then rename it over "<id>". So the event that
matters is IN_MOVED_TO; IN_CLOSE_WRITE covers writers that do not rename. Names with a dot
are glib's temporaries: container ids never contain one (runtime.py enforces it).
The file's mtime is the moment conmon learnt of the exit: the exit time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sandbox.oci.inotify import (
    IN_CLOSE_WRITE,
    IN_DELETE,
    IN_IGNORED,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Inotify,
)

log = logging.getLogger(__name__)

OnExit = Callable[[str, int, datetime], None]
_MAX_EXIT_FILE = 64  # "-1" or up to "255"; anything longer is not conmon's


def _is_exit_file_name(name: str) -> bool:
    return bool(name) and "." not in name and "/" not in name


def parse_exit_file(data: bytes) -> int | None:
    """The exit code, or None while the file is empty, partial or not conmon's."""
    text = data.strip()
    if not text or len(data) > _MAX_EXIT_FILE:
        return None
    try:
        return int(text)
    except ValueError:
        return None


class ExitWatcher:
    """Calls ``on_exit(ctr_id, exit_code, exited_at)`` once per exit file in ``exits_dir``.

    ``on_exit`` runs in the event loop's reader callback: it must not block; schedule work
    with ``loop.create_task`` if it needs to await. An exception it raises is logged.
    """

    def __init__(self, exits_dir: Path, on_exit: OnExit) -> None:
        self.exits_dir = exits_dir
        self._on_exit = on_exit
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (st_ino, st_mtime_ns) last reported per id: the startup scan and an event can both
        # see the same file, and IN_CLOSE_WRITE may follow a rename for a direct writer.
        self._reported: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        """Watch, then report exits that happened while nobody was watching (needs a loop).

        Watching first and scanning second leaves no gap; the scan's overlap with events
        is absorbed by the de-duplication.
        """
        if self._inotify is not None:
            raise RuntimeError("ExitWatcher already started")
        self.exits_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        inotify = Inotify()
        try:
            mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR
            inotify.add_watch(self.exits_dir, mask)
            loop.add_reader(inotify.fd, self._on_readable)
        except BaseException:
            inotify.close()
            raise
        self._inotify, self._loop = inotify, loop
        self._scan()

    def close(self) -> None:
        if self._inotify is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._inotify.fd)
        self._inotify.close()
        self._inotify = self._loop = None

    def read_exit(self, ctr_id: str) -> tuple[int, datetime] | None:
        """The recorded exit of ``ctr_id``, or None if there is none (yet)."""
        found = self._read(ctr_id)
        return None if found is None else (found[0], found[1])

    def forget(self, ctr_id: str) -> None:
        """Drop the de-duplication record, e.g. before re-creating a container id."""
        self._reported.pop(ctr_id, None)

    def _read(self, name: str) -> tuple[int, datetime, tuple[int, int]] | None:
        if not _is_exit_file_name(name):
            return None
        try:
            fd = os.open(self.exits_dir / name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            # fstat and read the same inode: a rename between the two cannot mix files.
            st = os.fstat(fd)
            data = os.read(fd, _MAX_EXIT_FILE + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        code = parse_exit_file(data)
        if code is None:
            return None
        exited_at = datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC)
        return code, exited_at, (st.st_ino, st.st_mtime_ns)

    def _report(self, name: str) -> None:
        found = self._read(name)
        if found is None:
            return
        code, exited_at, identity = found
        if self._reported.get(name) == identity:
            return
        self._reported[name] = identity
        try:
            self._on_exit(name, code, exited_at)
        except Exception:
            log.exception("exit callback failed for container %s", name)

    def _scan(self) -> None:
        try:
            names = [entry.name for entry in os.scandir(self.exits_dir)]
        except OSError as exc:
            log.error("cannot scan exits dir %s: %s", self.exits_dir, exc)
            return
        for name in names:
            self._report(name)

    def _on_readable(self) -> None:
        if self._inotify is None:
            return
        try:
            events = self._inotify.read_events()
        except OSError as exc:
            log.error("reading inotify events for %s: %s", self.exits_dir, exc)
            return
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                # Events were dropped: the directory itself is the truth.
                self._scan()
            elif event.mask & IN_IGNORED:
                log.error("exits dir %s went away; exits are no longer noticed", self.exits_dir)
            elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                self._reported.pop(event.name, None)
            elif event.mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                self._report(event.name)
