"""Exceptions raised by the cni package. Everything derives from CNIError."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
    """A plugin exited non-zero (or misbehaved); carries the CNI error object fields."""

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
            text += f" (code {self.code})"
        text += f": {self.msg or 'no error message'}"
        if self.details:
            text += f"; {self.details}"
        if self.stderr:
            text += f" [stderr: {self.stderr.strip()}]"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "command": self.command, "code": self.code, "msg": self.msg,
                "details": self.details, "stderr": self.stderr}


class CNITimeout(CNIError):
    def __init__(self, plugin: str, command: str, timeout: float) -> None:
        self.plugin = plugin
        self.command = command
        self.timeout = timeout
        super().__init__(f"plugin {plugin!r} {command} did not finish within {timeout:g}s "
                         "and was killed")
