"""The host side of AppArmor behind one narrow seam: is it enabled, which profiles the kernel
has loaded, this process's own label, and loading a profile with apparmor_parser.

Everything above this module decides from what these answer; the unit tests hand it a fake.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from sandbox.errors import SandboxError

log = logging.getLogger(__name__)

# Debian and Ubuntu install the parser in /sbin (= /usr/sbin), which a daemon's PATH may lack.
_PARSER_DIRS = ("/usr/sbin", "/sbin")
# A label the kernel reports that is safe to write into a profile as a peer: what profile
# names are made of in practice (paths, dashes, namespaces), nothing that could end a rule.
_PEER_LABEL = re.compile(r"[A-Za-z0-9_/:][A-Za-z0-9_./:+-]*")
_PARSER_OUTPUT_CAP = 4096  # parser errors are a few lines; enough to name the problem


class AppArmorError(SandboxError):
    """AppArmor could not be queried, or a profile could not be loaded."""


class Host(Protocol):
    def enabled(self) -> bool:
        """The kernel enforces AppArmor (runc's test: both the module and securityfs)."""
        ...

    def loaded(self) -> frozenset[str]:
        """Names of the loaded profiles, children as ``parent//child``."""
        ...

    def can_load(self) -> bool:
        """apparmor_parser is installed."""
        ...

    def load(self, text: str) -> None:
        """Load ``text`` into the kernel, replacing profiles of the same names."""
        ...

    def label(self) -> str:
        """The label this process runs under ("unconfined" when none)."""
        ...


def parse_profiles(text: str) -> frozenset[str]:
    """The names in /sys/kernel/security/apparmor/profiles: one ``name (mode)`` a line."""
    names = set()
    for line in text.splitlines():
        name, sep, _ = line.rpartition(" (")
        if sep and name:
            names.add(name)
    return frozenset(names)


def parse_label(text: str) -> str:
    """/proc/self/attr/current: ``unconfined``, or ``name (mode)``."""
    label = text.strip("\x00\n ")
    name, sep, _ = label.rpartition(" (")
    return (name if sep else label) or "unconfined"


def peer_label(label: str) -> str | None:
    """``label`` if it can stand as a peer in a profile rule, else None."""
    return label if _PEER_LABEL.fullmatch(label) else None


def find_parser() -> Path | None:
    found = shutil.which("apparmor_parser")
    if found:
        return Path(found)
    for d in _PARSER_DIRS:
        candidate = Path(d) / "apparmor_parser"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class SystemHost:
    """The real host: /sys and /proc, and apparmor_parser."""

    def __init__(self, *, sys_root: Path = Path("/sys"), proc_self: Path = Path("/proc/self"),
                 parser: Path | None = None, timeout: float = 60.0) -> None:
        self._sys = sys_root
        self._proc_self = proc_self
        self._parser = parser
        self._timeout = timeout

    @property
    def parser(self) -> Path | None:
        if self._parser is None:
            self._parser = find_parser()
        return self._parser

    def enabled(self) -> bool:
        try:
            flag = (self._sys / "module/apparmor/parameters/enabled").read_text()
        except OSError:
            return False
        return flag.startswith("Y") and (self._sys / "kernel/security/apparmor").is_dir()

    def loaded(self) -> frozenset[str]:
        path = self._sys / "kernel/security/apparmor/profiles"
        try:
            return parse_profiles(path.read_text())
        except OSError as exc:
            raise AppArmorError(f"cannot read the loaded AppArmor profiles ({path}): "
                                f"{exc.strerror or exc}") from exc

    def can_load(self) -> bool:
        return self.parser is not None

    def load(self, text: str) -> None:
        parser = self.parser
        if parser is None:
            raise AppArmorError("apparmor_parser is not installed (Debian and Ubuntu: the "
                                "apparmor package)")
        # -r: load or replace; -K: no cache, which could hand back an older compile of a
        # profile of the same name. The text comes on stdin, so no file is left behind.
        cmd = [str(parser), "-Kr"]
        try:
            res = subprocess.run(cmd, input=text.encode(), capture_output=True,
                                 timeout=self._timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AppArmorError(f"apparmor_parser did not finish in {self._timeout:g}s") from exc
        except OSError as exc:
            raise AppArmorError(f"cannot run {parser}: {exc.strerror or exc}") from exc
        if res.returncode != 0:
            out = (res.stderr or res.stdout)[:_PARSER_OUTPUT_CAP].decode(errors="replace")
            raise AppArmorError(f"apparmor_parser failed (exit {res.returncode}): "
                                f"{out.strip() or 'no output'}")

    def label(self) -> str:
        # attr/apparmor/current is AppArmor's own view when several LSMs are stacked;
        # attr/current is the older, shared file.
        for rel in ("attr/apparmor/current", "attr/current"):
            try:
                return parse_label((self._proc_self / rel).read_text())
            except OSError:
                continue
        return "unconfined"
