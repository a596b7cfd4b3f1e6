"""Exceptions raised by the cni package. Everything derives from CNIError."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Well-known error codes, CNI spec 1.0.0 "Error" section; 100+ are plugin-specific.
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}
# How much of a plugin's stderr goes into str(error); the attribute keeps more.
_STDERR_IN_MESSAGE = 512


def _go_panic(stderr: str) -> str | None:
    """"panic: <why> in <function> (<file:line>)" from a Go plugin's crash output, whose tail
    (runtime frames) says nothing useful."""
    lines = stderr.splitlines()
    i = next((n for n, line in enumerate(lines) if line.startswith("panic: ")), None)
    if i is None:
        return None
    why = lines[i][len("panic: "):]
    for j in range(i + 1, len(lines) - 2):
        if lines[j].startswith("goroutine ") and lines[j].endswith("[running]:"):
            func = lines[j + 1].split("(", 1)[0]
            where = lines[j + 2].strip().split(" ", 1)[0]
            return f"panic: {why} in {func} ({where})"
    return f"panic: {why}"


class CNIError(Exception):
    """Base class of every error the cni package raises."""


class CNIConfigError(CNIError):
    """A network configuration (conflist, .conf or cached copy) is unusable."""


class CNIResultError(CNIError):
    """A plugin printed a result that is not a valid CNI result."""


class CNIPluginNotFound(CNIError):
    def __init__(self, plugin: str, dirs: Sequence[Path]) -> None:
        self.plugin = plugin
        self.dirs = [Path(d) for d in dirs]
        where = ", ".join(str(d) for d in self.dirs) or "(no plugin directories configured)"
        super().__init__(f"CNI plugin {plugin!r} not found in {where}")


class CNIPluginError(CNIError):
    """A plugin exited non-zero (or misbehaved); carries the fields of the CNI error object."""

    def __init__(self, plugin: str, command: str, code: int | None, msg: str, details: str = "",
                 stderr: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.code = code
        self.msg = msg
        self.details = details
        self.stderr = stderr
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"plugin {self.plugin!r} {self.command} failed"
        if self.code is not None:
            known = ERROR_CODES.get(self.code)
            text += f" (code {self.code}{': ' + known if known else ''})"
        text += f": {self.msg or 'no error message'}"
        if self.details:
            text += f"; {self.details}"
        stderr = self.stderr.strip()
        panic = _go_panic(stderr)
        if panic:
            text += f" [{panic}]"
        elif stderr:
            if len(stderr) > _STDERR_IN_MESSAGE:
                stderr = "..." + stderr[-_STDERR_IN_MESSAGE:]
            text += f" [stderr: {stderr}]"
        return text

    @property
    def retryable(self) -> bool:
        """Code 11: the plugin asks the runtime to try the operation again later."""
        return self.code == 11

    def to_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "command": self.command, "code": self.code, "msg": self.msg,
                "details": self.details, "stderr": self.stderr}


class CNITimeout(CNIError):
    """A plugin ran past its deadline; it and every process of its group were killed."""

    def __init__(self, plugin: str, command: str, timeout: float, stderr: str = "") -> None:
        self.plugin = plugin
        self.command = command
        self.timeout = timeout
        self.stderr = stderr
        text = f"plugin {plugin!r} {command} did not finish within {timeout:g}s and was killed"
        tail = stderr.strip()[-_STDERR_IN_MESSAGE:]
        super().__init__(f"{text} [stderr: {tail}]" if tail else text)
