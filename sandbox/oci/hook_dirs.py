"""The hook files of [pycri.runtime] hooks_dir (sandbox/oci/hooks.py parses one), as
oci-hooks(5) has directories work: only ``*.json`` files count, and a file in a later
directory masks the file of the same name in an earlier one whatever either holds (the man
page masks by name; an operator's broken override must not bring back the hook it was
written to replace). Missing directories are skipped, as CRI-O skips them.

A file that breaks a rule is skipped with a warning naming it and why, once per version of it;
it never fails a container. Files are read again when they change (mtime, size or inode), and
files that were invalid at every call, so installing a hook's binary after its file is enough.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from sandbox import file_stamp
from sandbox.file_stamp import Stamp
from sandbox.oci.hooks import Hook, HookError, parse

log = logging.getLogger(__name__)

class HookDirs:
    """The hooks of a list of directories (earlier ones masked by later ones), read again
    whenever a file in them changes. Safe to call from several worker threads."""

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._lock = threading.Lock()
        self._valid: dict[Path, tuple[Stamp, Hook]] = {}
        self._warned: dict[Path, tuple[Stamp | None, str]] = {}  # what was said, per file

    def hooks(self) -> list[Hook]:
        """The valid hooks in effect now, in injection order."""
        with self._lock:
            chosen: dict[str, Path] = {}
            for d in self.dirs:
                for name in self._list(d):
                    chosen[name] = d / name
            live = set(chosen.values())
            for gone in [p for p in self._valid if p not in live]:
                del self._valid[gone]
            for gone in [p for p in self._warned if p not in live and p not in self.dirs]:
                del self._warned[gone]
            found = [h for name, path in chosen.items()
                     if (h := self._load(name, path)) is not None]
        return sorted(found, key=lambda h: h.name.lower())

    def _list(self, d: Path) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(d) if e.name.endswith(".json"))
        except FileNotFoundError:
            return []  # a directory that is not there is none of our business (CRI-O skips it)
        except OSError as exc:
            self._warn(d, None, f"cannot list it: {exc.strerror or exc}", "hooks directory")
            return []

    def _load(self, name: str, path: Path) -> Hook | None:
        stamp: Stamp | None = None
        try:
            st = path.stat()
            stamp = file_stamp.stamp(st)
            cached = self._valid.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            self._valid.pop(path, None)
            if not path.is_file():
                raise HookError("not a regular file")
            hook = parse(name, path, path.read_bytes())
        except HookError as exc:
            self._warn(path, stamp, str(exc))
            return None
        except OSError as exc:
            self._warn(path, stamp, f"cannot read it: {exc.strerror or exc}")
            return None
        self._valid[path] = (stamp, hook)
        if self._warned.pop(path, None) is not None:
            log.info("OCI hook file %s is valid again", path)
        return hook

    def _warn(self, path: Path, stamp: Stamp | None, reason: str, what: str = "hook file"
              ) -> None:
        if self._warned.get(path) == (stamp, reason):
            return  # said once for this version of the file
        self._warned[path] = (stamp, reason)
        log.warning("OCI %s %s skipped: %s", what, path, reason)
