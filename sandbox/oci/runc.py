"""Run one runc command with a deadline and turn its failure into a typed error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError

# runc and its hooks get a fixed environment: the daemon's own (NOTIFY_SOCKET in particular,
# which runc would start proxying for the container) has no business there.
RUNTIME_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# libcontainer's error strings (runc 1.1 libcontainer/error.go); runc has no exit codes
# for them, so the text is the only signal.
_NOT_FOUND = "container does not exist"
_NOT_RUNNING = "container not running"


def global_args(root: Path, systemd_cgroup: bool = False) -> list[str]:
    # JSON log lines on stderr let error_message() pull out the message without parsing
    # logrus' quoted text format. --systemd-cgroup: cgroupsPath is slice:prefix:name and
    # runc asks systemd for the container's scope (the systemd cgroup driver).
    args = [f"--root={root}", "--log-format=json"]
    return [*args, "--systemd-cgroup"] if systemd_cgroup else args


def error_message(stderr: bytes) -> str:
    """The error text of runc's JSON log lines, or the raw output when it is not JSON."""
    messages: list[str] = []
    raw: list[str] = []
    for line in stderr.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raw.append(line)
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            messages.append(str(entry.get("msg", line)))
    return "; ".join(messages or raw)


def classify(message: str) -> OCIRuntimeError:
    if _NOT_FOUND in message:
        return OCINotFound(message)
    if _NOT_RUNNING in message:
        return OCINotRunning(message)
    return OCIRuntimeError(message)


async def run_runc(runtime_path: Path, root: Path, args: Sequence[str],
                   systemd_cgroup: bool = False) -> bytes:
    """Run ``runc --root root args...`` and return its stdout.

    Bound it with ``asyncio.timeout``: cancellation kills and reaps runc, so no runc is left
    behind doing work nobody awaits.
    """
    argv = [str(runtime_path), *global_args(root, systemd_cgroup), *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=RUNTIME_ENV,
        )
    except OSError as exc:
        raise OCIRuntimeError(f"cannot run {runtime_path}: {exc}") from exc
    try:
        stdout, stderr = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if proc.returncode != 0:
        message = error_message(stderr) or f"exit status {proc.returncode}"
        raise classify(f"runc {args[0] if args else ''}: {message}")
    return stdout


async def mount_options(runtime_path: Path) -> frozenset[str]:
    """The mount options this runc understands (`runc features`, runc >= 1.1); empty when it
    cannot say, so optional features (such as "rro") are then reported unsupported."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(runtime_path), "features", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=RUNTIME_ENV)
        out, _ = await proc.communicate()
    except OSError:
        return frozenset()
    if proc.returncode != 0:
        return frozenset()
    try:
        features = json.loads(out)
        options = features.get("mountOptions") or []
    except (ValueError, AttributeError):
        return frozenset()
    return frozenset(o for o in options if isinstance(o, str))
