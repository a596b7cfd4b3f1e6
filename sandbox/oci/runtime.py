"""Drive runc through conmon: one conmon per container, plain runc for everything else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sandbox.errors import CgroupError
from sandbox.oci.conmon import (
    START_PIPE_ENV,
    SYNC_PIPE_ENV,
    ConmonArgs,
    ConmonExitedEarly,
    conmon_argv,
    parse_sync_message,
)
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError, OCITimeout
from sandbox.oci.runc import RUNTIME_ENV, run_runc

# place_monitor(conmon pid, container id, pod cgroup)
PlaceMonitor = Callable[[int, str, str], Awaitable[None]]

log = logging.getLogger(__name__)

# Container ids name files in the exits dir; no dots keeps them apart from the "<id>.XXXXXX"
# temporaries glib writes there first (see exits.py), and no slashes keeps them one name.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_SYNC_LINE_MAX = 1 << 20


def _check_id(ctr_id: str) -> None:
    if not _ID_RE.fullmatch(ctr_id):
        raise ValueError(f"invalid container id {ctr_id!r}")


class OCIRuntime:
    """runc (``runtime_path``) with state under ``runtime_root``, monitored by conmon."""

    def __init__(
        self,
        runtime_path: Path,
        conmon_path: Path,
        runtime_root: Path,
        exits_dir: Path,
        persist_root: Path,
        *,
        conmon_log_level: str = "error",
        runc_timeout: float = 30.0,
        place_monitor: PlaceMonitor | None = None,
        systemd_cgroup: bool = False,
    ) -> None:
        """``place_monitor(pid, ctr_id, pod_cgroup)``, when given, moves a new conmon into its
        cgroup before conmon starts anything (and may raise OSError or CgroupError to refuse
        it). ``systemd_cgroup``: runc runs with --systemd-cgroup (the systemd driver)."""
        self.runtime_path = runtime_path
        self.conmon_path = conmon_path
        self.runtime_root = runtime_root
        self.exits_dir = exits_dir
        self.persist_root = persist_root
        self.conmon_log_level = conmon_log_level
        self.runc_timeout = runc_timeout
        self.place_monitor = place_monitor
        self.systemd_cgroup = systemd_cgroup

    def persist_dir(self, ctr_id: str) -> Path:
        """conmon's per-container dir: conmon.pid, and ``exit`` / ``oom`` once they happen."""
        _check_id(ctr_id)
        return self.persist_root / ctr_id

    def conmon_pidfile(self, ctr_id: str) -> Path:
        return self.persist_dir(ctr_id) / "conmon.pid"

    def conmon_pid(self, ctr_id: str) -> int | None:
        try:
            return int(self.conmon_pidfile(ctr_id).read_text())
        except (OSError, ValueError):
            return None

    def monitor_alive(self, ctr_id: str) -> bool:
        """Whether the container's conmon still runs (and so will record its exit).

        conmon dies of SIGPIPE when it reports to a daemon that was killed mid-create: the
        container then runs unmonitored, and no exit file will ever come for it.
        """
        pid = self.conmon_pid(ctr_id)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"conmon" in cmdline and ctr_id.encode() in cmdline

    async def kill_unmonitored(self, ctr_id: str, wait: float) -> bool:
        """SIGKILL a container whose conmon is gone, and wait (pidfd, no polling) until its init
        has exited. Returns whether it was still running."""
        state = await self.state(ctr_id)
        pid = int(state.get("pid") or 0) if state else 0
        if state is None or pid <= 0 or state.get("status") == "stopped":
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(pidfd, gone.set)
        try:
            with contextlib.suppress(OCINotFound, OCINotRunning):
                await self.kill(ctr_id, signal.SIGKILL, all_procs=True)
            try:
                await asyncio.wait_for(gone.wait(), wait)
            except TimeoutError as exc:
                raise OCITimeout(f"{ctr_id} did not die after SIGKILL") from exc
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return True

    async def create(
        self,
        ctr_id: str,
        bundle: Path,
        *,
        log_path: Path,
        pidfile: Path,
        attach_socket_dir: Path,
        terminal: bool = False,
        stdin: bool = False,
        stdin_once: bool = False,
        name: str | None = None,
        log_size_max: int | None = None,
        pod_cgroup: str = "",
        # An explicit deadline (not just the caller's asyncio.timeout) because running out of
        # it is an answer of its own, OCITimeout; cancellation cleans up the same way.
        timeout: float,  # noqa: ASYNC109
    ) -> int:
        """``runc create`` under a new conmon; returns the container's init pid.

        The caller owns ``ctr_id``: after a timeout, a cancellation or an unexplained failure,
        conmon is killed and whatever runc state carries that id is force-deleted.
        """
        persist_dir = self.persist_dir(ctr_id)
        persist_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.exits_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Leftovers of an earlier attempt with this id would be read as this one's: a stale
        # conmon.pid could make _abort_create kill an unrelated process that reused the pid.
        stale_files = [persist_dir / n for n in ("conmon.pid", "exit", "oom", "runc.log")]
        for stale in [*stale_files, self.exits_dir / ctr_id]:
            stale.unlink(missing_ok=True)
        argv = conmon_argv(ConmonArgs(
            conmon_path=self.conmon_path,
            runtime_path=self.runtime_path,
            runtime_root=self.runtime_root,
            ctr_id=ctr_id,
            name=name or ctr_id,
            bundle=bundle,
            pidfile=pidfile,
            conmon_pidfile=persist_dir / "conmon.pid",
            exits_dir=self.exits_dir,
            persist_dir=persist_dir,
            attach_socket_dir=attach_socket_dir,
            log_path=log_path,
            log_level=self.conmon_log_level,
            log_size_max=log_size_max,
            terminal=terminal,
            stdin=stdin,
            stdin_once=stdin_once,
            systemd_cgroup=self.systemd_cgroup,
            runtime_log=persist_dir / "runc.log",
        ))
        try:
            async with asyncio.timeout(timeout):
                return await self._spawn_conmon(argv, bundle, ctr_id, pod_cgroup)
        except TimeoutError as exc:
            await self._abort_create(ctr_id)
            raise OCITimeout(f"create {ctr_id}: conmon did not report in {timeout:g}s") from exc
        except ConmonExitedEarly:
            await self._abort_create(ctr_id)
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self._abort_create(ctr_id))
            raise

    async def _spawn_conmon(self, argv: list[str], bundle: Path, ctr_id: str,
                            pod_cgroup: str) -> int:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        start_read, start_write = os.pipe2(os.O_CLOEXEC)
        proc: asyncio.subprocess.Process | None = None
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    pass_fds=(write_fd, start_read),
                    env={**RUNTIME_ENV, SYNC_PIPE_ENV: str(write_fd),
                         START_PIPE_ENV: str(start_read)},
                    cwd=bundle,
                    # Own session from the first instruction: a signal to the daemon's process
                    # group (Ctrl-C, a service manager's stop) must never reach a conmon.
                    start_new_session=True,
                )
            except OSError as exc:
                raise OCIRuntimeError(f"cannot run {argv[0]}: {exc}") from exc
            finally:
                # Only conmon may hold the write end, so its death reads as EOF here.
                os.close(write_fd)
                os.close(start_read)
            if self.place_monitor:
                # On failure conmon is killed (below) before the start pipe closes: EOF
                # would let it go on in the wrong cgroup.
                try:
                    await self.place_monitor(proc.pid, ctr_id, pod_cgroup)
                except (OSError, CgroupError) as exc:
                    raise OCIRuntimeError(f"cannot move conmon into its cgroup: {exc}") from exc
            # conmon waits for this before it forks anything. A broken pipe means it is gone
            # already: its status and stderr (below) say why.
            with contextlib.suppress(BrokenPipeError):
                os.write(start_write, b"0")
            # The first conmon exits as soon as its daemonized child is forked; stderr reaches
            # EOF once that child has pointed its stdio at /dev/null.
            _, stderr = await proc.communicate()
            if proc.returncode != 0:
                text = stderr.decode(errors="replace").strip()
                raise OCIRuntimeError(f"conmon exited with status {proc.returncode}: {text}")
            return parse_sync_message(await _read_line(read_fd))
        except BaseException:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
            raise
        finally:
            os.close(read_fd)
            os.close(start_write)

    async def _abort_create(self, ctr_id: str) -> None:
        pid = self.conmon_pid(ctr_id)
        if pid is not None:
            # conmon gives `runc create` PDEATHSIG=SIGKILL, so this ends both.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            await self.delete(ctr_id, force=True)
        except OCIRuntimeError as exc:
            log.warning("cleaning up after failed create of %s: %s", ctr_id, exc)

    async def _runc(self, *args: str) -> bytes:
        """One runc command, killed after ``runc_timeout`` (callers may cancel it sooner)."""
        try:
            async with asyncio.timeout(self.runc_timeout):
                return await run_runc(self.runtime_path, self.runtime_root, args,
                                      self.systemd_cgroup)
        except TimeoutError as exc:
            raise OCITimeout(f"runc {' '.join(args)}: no answer in {self.runc_timeout:g}s") from exc

    async def start(self, ctr_id: str) -> None:
        _check_id(ctr_id)
        await self._runc("start", ctr_id)

    async def kill(self, ctr_id: str, sig: int, all_procs: bool = False) -> None:
        """Signal the container's init (or, with ``all_procs``, every process in its cgroup).

        Raises OCINotRunning when the container has already stopped.
        """
        _check_id(ctr_id)
        args = ["kill", *(["--all"] if all_procs else []), ctr_id, str(int(sig))]
        await self._runc(*args)

    async def update(self, ctr_id: str, resources: dict[str, Any], scratch: Path) -> None:
        """``runc update`` with OCI ``linux.resources`` (applied to the live cgroup)."""
        _check_id(ctr_id)
        tmp = await asyncio.to_thread(_write_temp_json, scratch, f"update-{ctr_id[:12]}-",
                                      resources)
        try:
            await self._runc("update", "--resources", tmp, ctr_id)
        finally:
            os.unlink(tmp)

    async def delete(self, ctr_id: str, force: bool = False) -> None:
        """Remove runc's state (and, with ``force``, kill a live container first).

        A container runc does not know is already deleted: success.
        """
        _check_id(ctr_id)
        args = ["delete", *(["--force"] if force else []), ctr_id]
        with contextlib.suppress(OCINotFound):
            await self._runc(*args)

    async def state(self, ctr_id: str) -> dict[str, Any] | None:
        """runc's state JSON (``status``: created/running/paused/stopped), None if unknown."""
        _check_id(ctr_id)
        try:
            out = await self._runc("state", ctr_id)
        except OCINotFound:
            return None
        try:
            state = json.loads(out)
        except ValueError as exc:
            raise OCIRuntimeError(f"runc state {ctr_id}: not JSON: {out[:200]!r}") from exc
        if not isinstance(state, dict):
            raise OCIRuntimeError(f"runc state {ctr_id}: not an object: {out[:200]!r}")
        return state


def _write_temp_json(directory: Path, prefix: str, obj: object) -> str:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)  # 0600
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    return tmp


async def _read_line(fd: int) -> bytes:
    """Read up to the first newline (or EOF) from a non-blocking fd, without a thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    buf = bytearray()

    def on_readable() -> None:
        if done.done():
            return
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            done.set_exception(OCIRuntimeError(f"reading conmon's sync pipe: {exc}"))
            return
        buf.extend(chunk)
        newline = buf.find(b"\n")
        if newline >= 0:
            done.set_result(bytes(buf[: newline + 1]))
        elif not chunk or len(buf) > _SYNC_LINE_MAX:
            done.set_result(bytes(buf))

    loop.add_reader(fd, on_readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
