"""Executing one CNI plugin binary: protocol env vars, config on stdin, result on stdout.

The protocol (CNI spec 1.0.0, "Protocol parameters" and "Execution"): parameters travel in
CNI_* environment variables, the network configuration as JSON on stdin, the result (or an
error object {code, msg, details}) as JSON on stdout; exit status 0 means success.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cni.errors import CNIPluginError, CNIPluginNotFound, CNITimeout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A result is a few KiB; anything near this is a broken plugin, not a bigger network.
MAX_STDOUT = 4 << 20
# The end of stderr is where a failing Go plugin prints its panic or last log line.
STDERR_TAIL = 8192
_READ_CHUNK = 65536
# ';' separates CNI_ARGS pairs and '=' key from value, so either inside a value would let a
# pod name smuggle in an extra argument (e.g. IP=...); NUL and newlines break the environment.
FORBIDDEN_ARG_CHARS = (";", "=", "\x00", "\n", "\r")


def find_plugin(plugin_type: str, plugin_dirs: Sequence[Path]) -> Path:
    """The first executable regular file named plugin_type in plugin_dirs."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIPluginNotFound(plugin_type, plugin_dirs)
    for d in plugin_dirs:
        candidate = Path(d) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CNIPluginNotFound(plugin_type, plugin_dirs)


def encode_args(args: Mapping[str, str]) -> str:
    """CNI_ARGS: K=V pairs joined by ';'. Keys/values that would smuggle extra pairs are refused."""
    parts = []
    for key, value in args.items():
        if not key or any(ch in key for ch in FORBIDDEN_ARG_CHARS):
            raise ValueError(f"invalid CNI_ARGS key {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"CNI_ARGS value for {key} must be a string, not {type(value).__name__}")
        if any(ch in value for ch in FORBIDDEN_ARG_CHARS):
            raise ValueError(f"CNI_ARGS value for {key} contains a forbidden character: {value!r}")
        parts.append(f"{key}={value}")
    return ";".join(parts)


def plugin_env(command: str, container_id: str, netns: str, ifname: str, args: Mapping[str, str],
               plugin_dirs: Sequence[Path]) -> dict[str, str]:
    """The plugin's whole environment: the CNI_* parameters and PATH (plugins run iptables, tc,
    ...). Nothing else of the daemon's environment leaks into plugins."""
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": encode_args(args),
        "CNI_PATH": ":".join(str(d) for d in plugin_dirs),
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
    }


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The plugin leads its own session (start_new_session), so its pid is the group id and the
    # group holds any helpers it forked (iptables, delegated IPAM plugins, ...).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _text(data: bytes | bytearray, limit: int, *, tail: bool = True) -> str:
    cut = data[-limit:] if tail else data[:limit]
    text = bytes(cut).decode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return "..." + text if tail else text + "..."


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    # A plugin may exit without reading stdin (e.g. VERSION, or an early failure).
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
    stream.close()


async def _drain_head(stream: asyncio.StreamReader, into: bytearray, limit: int) -> None:
    """Read to EOF keeping the first `limit` bytes (memory stays bounded, the pipe never fills)."""
    while chunk := await stream.read(_READ_CHUNK):
        if len(into) < limit:
            into += chunk[:limit - len(into)]


async def _drain_tail(stream: asyncio.StreamReader, into: bytearray, limit: int) -> None:
    """Read to EOF keeping the last `limit` bytes (callers ask for one more than they show,
    so a cut tail is marked as such)."""
    while chunk := await stream.read(_READ_CHUNK):
        into += chunk
        if len(into) > limit:
            del into[:-limit]


def _error_from_output(plugin: str, command: str, rc: int, stdout: bytes, stderr: str) -> CNIPluginError:
    try:
        obj = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        obj = None
    if isinstance(obj, dict) and ("code" in obj or "msg" in obj):
        raw_code = obj.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        msg, details = str(obj.get("msg") or ""), str(obj.get("details") or "")
    else:
        code, msg, details = None, _text(stdout, 1024).strip(), ""
    if not msg:
        msg = f"exited with status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    return CNIPluginError(plugin, command, code, msg, details, stderr)


async def exec_plugin(path: Path, command: str, config: Mapping[str, Any], *, container_id: str,
                      netns: str, ifname: str, args: Mapping[str, str], plugin_dirs: Sequence[Path],
                      time_limit: float) -> dict[str, Any] | None:
    """Run one plugin; returns the JSON object it printed (None for empty output, as DEL and
    CHECK print nothing on success).

    The plugin runs in its own process group; at time_limit (or when the caller is cancelled)
    the whole group is SIGKILLed. Raises CNIPluginError, CNITimeout."""
    plugin = path.name
    env = plugin_env(command, container_id, netns, ifname, args, plugin_dirs)
    stdin = json.dumps(config).encode()
    stdout, stderr = bytearray(), bytearray()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd="/", start_new_session=True,
        )
    except OSError as exc:  # not executable, no interpreter, a script without #! ...
        raise CNIPluginError(plugin, command, None, f"cannot execute {path}: {exc.strerror or exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(_feed(proc.stdin, stdin),
                                 _drain_head(proc.stdout, stdout, MAX_STDOUT + 1),
                                 _drain_tail(proc.stderr, stderr, STDERR_TAIL + 1))
            rc = await proc.wait()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise CNITimeout(plugin, command, time_limit, _text(stderr, STDERR_TAIL)) from None
    except BaseException:
        # Cancelled (or anything else): never leave the plugin or its children running.
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    err_text = _text(stderr, STDERR_TAIL)
    if rc != 0:
        raise _error_from_output(plugin, command, rc, bytes(stdout), err_text)
    if len(stdout) > MAX_STDOUT:
        raise CNIPluginError(plugin, command, None, f"printed more than {MAX_STDOUT} bytes",
                             stderr=err_text)
    if not stdout.strip():
        return None
    try:
        obj = json.loads(stdout)
    except ValueError as exc:
        raise CNIPluginError(plugin, command, None, f"printed invalid JSON: {exc}",
                             details=_text(stdout, 512, tail=False), stderr=err_text) from None
    if not isinstance(obj, dict):
        raise CNIPluginError(plugin, command, None, "printed JSON that is not an object",
                             stderr=err_text)
    return obj
