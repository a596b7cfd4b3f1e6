"""Executing one CNI plugin binary: protocol env vars, config on stdin, result on stdout."""

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
STDERR_TAIL = 4096
MAX_STDOUT = 16 << 20
_FORBIDDEN = (";", "=", "\x00", "\n", "\r")


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
        if not key or any(ch in key for ch in _FORBIDDEN):
            raise ValueError(f"invalid CNI_ARGS key {key!r}")
        if any(ch in value for ch in _FORBIDDEN):
            raise ValueError(f"CNI_ARGS value for {key} contains a forbidden character: {value!r}")
        parts.append(f"{key}={value}")
    return ";".join(parts)


def plugin_env(command: str, container_id: str, netns: str, ifname: str, args: Mapping[str, str],
               plugin_dirs: Sequence[Path]) -> dict[str, str]:
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


def _tail(data: bytes, limit: int = STDERR_TAIL) -> str:
    text = data[-limit:].decode("utf-8", "replace")
    return ("..." + text) if len(data) > limit else text


def _error_from_output(plugin: str, command: str, rc: int, stdout: bytes, stderr: bytes) -> CNIPluginError:
    code: int | None = None
    msg = ""
    details = ""
    try:
        obj = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        obj = None
    if isinstance(obj, dict) and ("code" in obj or "msg" in obj):
        raw_code = obj.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        msg = str(obj.get("msg") or "")
        details = str(obj.get("details") or "")
    else:
        msg = _tail(stdout, 1024).strip()
    if not msg:
        msg = f"exited with status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    return CNIPluginError(plugin, command, code, msg, details, _tail(stderr))


async def exec_plugin(path: Path, command: str, config: Mapping[str, Any], *, container_id: str,
                      netns: str, ifname: str, args: Mapping[str, str], plugin_dirs: Sequence[Path],
                      time_limit: float) -> dict[str, Any] | None:
    """Run one plugin; returns the parsed JSON it printed (None for empty output)."""
    plugin = path.name
    env = plugin_env(command, container_id, netns, ifname, args, plugin_dirs)
    stdin = json.dumps(config).encode()
    proc = await asyncio.create_subprocess_exec(
        str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd="/", start_new_session=True,
        close_fds=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), time_limit)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise CNITimeout(plugin, command, time_limit) from None
    except BaseException:
        # Cancelled (or anything else): never leave the plugin or its children running.
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    rc = proc.returncode if proc.returncode is not None else -1
    if rc != 0:
        raise _error_from_output(plugin, command, rc, stdout, stderr)
    if len(stdout) > MAX_STDOUT:
        raise CNIPluginError(plugin, command, None, f"printed more than {MAX_STDOUT} bytes",
                             stderr=_tail(stderr))
    if not stdout.strip():
        return None
    try:
        obj = json.loads(stdout)
    except ValueError as exc:
        raise CNIPluginError(plugin, command, None, f"printed invalid JSON: {exc}",
                             details=_tail(stdout, 512), stderr=_tail(stderr)) from None
    if not isinstance(obj, dict):
        raise CNIPluginError(plugin, command, None, "printed JSON that is not an object",
                             stderr=_tail(stderr))
    return obj
