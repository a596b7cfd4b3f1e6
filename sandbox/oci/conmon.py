"""conmon's command line and its sync-pipe protocol (conmon 2.1, --api-version 1).

conmon forks: the process we start writes the -P pidfile for its child and exits at once;
the child calls setsid(), runs `runc create`, and reports on the fd named by _OCI_SYNCPIPE
one JSON line: {"data": <container pid>} or {"data": -1, "message": "<runc's stderr>"}.
It then stays behind as the container's monitor, owning its stdio and writing the exit code
to <exit-dir>/<id> (and <persist-dir>/exit) when the container's init exits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sandbox.oci.errors import OCIRuntimeError
from sandbox.oci.runc import error_message, global_args

SYNC_PIPE_ENV = "_OCI_SYNCPIPE"
# conmon blocks on a read of this fd before it forks anything, so its parent can move it into
# another cgroup first (every process it starts then inherits that cgroup).
START_PIPE_ENV = "_OCI_STARTPIPE"
# conmon rejects any other spelling ("No such log level").
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")


@dataclass(frozen=True, slots=True)
class ConmonArgs:
    conmon_path: Path
    runtime_path: Path
    runtime_root: Path
    ctr_id: str
    name: str
    bundle: Path
    pidfile: Path
    conmon_pidfile: Path
    exits_dir: Path
    persist_dir: Path
    attach_socket_dir: Path
    log_path: Path
    log_level: str = "error"
    log_size_max: int | None = None
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False
    systemd_cgroup: bool = False
    # Where runc writes its own log lines. Not stderr: at create time runc's stderr is the
    # container's, so a warning (runc 1.1's systemd driver warns of every device rule whose
    # /sys/dev/char entry is missing, tun's on a node without the module) would open the
    # container's log. Errors still reach stderr, as plain text, for conmon to relay.
    runtime_log: Path | None = None


class ConmonExitedEarly(OCIRuntimeError):
    """conmon closed the sync pipe without a word: it died, so nobody cleaned up after runc."""


def conmon_argv(a: ConmonArgs) -> list[str]:
    if a.log_level not in LOG_LEVELS:
        raise ValueError(f"conmon log level {a.log_level!r} is not one of {LOG_LEVELS}")
    argv = [
        str(a.conmon_path),
        "--api-version", "1",
        "-c", a.ctr_id,
        "-u", a.ctr_id,
        "-n", a.name,
        "-r", str(a.runtime_path),
        "-b", str(a.bundle),
        "-p", str(a.pidfile),
        "-P", str(a.conmon_pidfile),
        "--exit-dir", str(a.exits_dir),
        "--persist-dir", str(a.persist_dir),
        # Ignored with --full-attach (conmon 2.1 then binds <bundle>/attach), but older
        # conmons want it and it documents where a shortened symlink would go.
        "--socket-dir-path", str(a.attach_socket_dir),
        "--full-attach",
        "-l", f"k8s-file:{a.log_path}",
        "--log-level", a.log_level,
    ]
    for arg in global_args(a.runtime_root, a.systemd_cgroup):
        argv += ["--runtime-arg", arg]
    if a.runtime_log is not None:
        argv += ["--runtime-arg", f"--log={a.runtime_log}"]
    if a.systemd_cgroup:
        argv.append("--systemd-cgroup")
    if a.log_size_max is not None:
        argv += ["--log-size-max", str(a.log_size_max)]
    if a.terminal:
        argv.append("-t")
    elif a.stdin:
        # CRI stdin_once: the container's stdin closes with its first attach session.
        if not a.stdin_once:
            argv.append("--leave-stdin-open")
        argv.append("-i")
    return argv


def attach_socket_path(bundle: Path) -> Path:
    """Where conmon binds the attach socket when started with --full-attach."""
    return bundle / "attach"


def parse_sync_message(line: bytes) -> int:
    """The container pid from conmon's sync line, or OCIRuntimeError with runc's message."""
    if not line.strip():
        raise ConmonExitedEarly("conmon exited without reporting the container pid")
    try:
        msg = json.loads(line)
        pid = int(msg["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OCIRuntimeError(f"malformed message from conmon: {line[:200]!r}") from exc
    if pid > 0:
        return pid
    text = msg.get("message")
    if isinstance(text, str) and text.strip():
        # conmon relays the first chunk of runc's stderr: JSON log lines (--log-format=json).
        raise OCIRuntimeError(f"runc create: {error_message(text.encode())}")
    raise OCIRuntimeError(f"runc create failed (conmon reported {pid})")
