"""The CDI devices of the configured spec directories, re-read when a spec file changes.

Each directory's ``*.json`` and ``*.yaml`` files are read in name order. A device provided by a
later directory replaces the same device of an earlier one (the CDI rule that lets
``/var/run/cdi``, written by drivers at run time, override the static ``/etc/cdi``); two files of
the same directory providing one device make it unusable, since neither can be picked.

Nothing polls: each lookup lists the directories and compares every file's inode, size, mtime
and ctime with what was read, and reads only what changed. Lookups happen only for containers
that request CDI devices, so the cost is a few stat calls for those. A file that cannot be used
is logged once (until it changes) and leaves the other files' devices alone; a request for a
device it might have provided is refused with the file's error in the reason.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import file_stamp
from sandbox.cdi.names import InvalidName, parse_qualified
from sandbox.cdi.spec import Edits, Spec, SpecError, load
from sandbox.file_stamp import Stamp

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml")

class Unresolvable(Exception):
    """Requested devices that cannot be given, each with the reason."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(f"{name}: {why}" for name, why in reasons.items()))


@dataclass(frozen=True)
class Resolved:
    """A requested device: its qualified name, the spec that provides it, its own edits."""

    name: str
    spec: Spec
    edits: Edits


@dataclass
class _Index:
    devices: dict[str, tuple[int, Spec]] = field(default_factory=dict)  # name -> (priority, spec)
    conflicts: dict[str, str] = field(default_factory=dict)  # name -> why
    broken: list[SpecError] = field(default_factory=list)


class Registry:
    def __init__(self, dirs: Sequence[str | Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._lock = threading.Lock()  # lookups run in worker threads
        self._files: dict[Path, tuple[Stamp, Spec | SpecError]] = {}
        self._listing: list[tuple[int, Path, Stamp]] | None = None
        self._index = _Index()
        self._dir_errors: set[str] = set()  # logged once each

    def resolve(self, names: Iterable[str]) -> list[Resolved]:
        """The devices ``names`` request, in order (a repeated name once); raises Unresolvable
        naming every one that cannot be given."""
        wanted = list(dict.fromkeys(names))
        with self._lock:
            index = self._refresh()
        out: list[Resolved] = []
        reasons: dict[str, str] = {}
        for name in wanted:
            try:
                kind, device = parse_qualified(name)
            except InvalidName as exc:
                reasons[name] = str(exc)
                continue
            if name in index.conflicts:
                reasons[name] = index.conflicts[name]
                continue
            found = index.devices.get(name)
            if found is None:
                reasons[name] = self._why_unknown(index, kind)
                continue
            spec = found[1]
            out.append(Resolved(name, spec, spec.devices[device]))
        if reasons:
            raise Unresolvable(reasons)
        return out

    def _why_unknown(self, index: _Index, kind: str) -> str:
        # A broken file of this kind, or one whose kind could not even be read, may be the
        # one that was meant to provide the device.
        broken = [str(e) for e in index.broken if e.kind in (kind, None)]
        if broken:
            return "no usable CDI spec provides it; " + "; ".join(broken)
        dirs = ", ".join(str(d) for d in self.dirs)
        return f"no CDI spec in {dirs} provides it"

    def _refresh(self) -> _Index:
        listing = self._list()
        if listing == self._listing:
            return self._index
        files: dict[Path, tuple[Stamp, Spec | SpecError]] = {}
        for _, path, stamp in listing:
            cached = self._files.get(path)
            if cached is not None and cached[0] == stamp:
                files[path] = cached
                continue
            result: Spec | SpecError
            try:
                spec = result = load(path)
                log.info("CDI spec %s: kind %s, devices %s", path, spec.kind,
                         ", ".join(spec.devices))
            except SpecError as exc:
                log.warning("CDI spec cannot be used, its devices are refused: %s", exc)
                result = exc
            files[path] = (stamp, result)
        self._files = files
        self._listing = listing
        self._index = _build(listing, files)
        return self._index

    def _list(self) -> list[tuple[int, Path, Stamp]]:
        out: list[tuple[int, Path, Stamp]] = []
        for priority, d in enumerate(self.dirs):
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except FileNotFoundError:
                continue  # a directory that is not there (yet) provides nothing
            except OSError as exc:
                if str(d) not in self._dir_errors:
                    self._dir_errors.add(str(d))
                    log.warning("CDI spec directory %s cannot be listed: %s", d, exc.strerror)
                continue
            for entry in entries:
                if not entry.name.endswith(SUFFIXES):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # gone since the listing
                out.append((priority, Path(entry.path), file_stamp.stamp(st)))
        return out


def _build(listing: list[tuple[int, Path, Stamp]],
           files: dict[Path, tuple[Stamp, Spec | SpecError]]) -> _Index:
    index = _Index()
    for priority, path, _ in listing:
        spec = files[path][1]
        if isinstance(spec, SpecError):
            index.broken.append(spec)
            continue
        for device in spec.devices:
            name = f"{spec.kind}={device}"
            old = index.devices.get(name)
            if old is not None and old[0] == priority:
                index.conflicts[name] = (f"provided by both {old[1].path} and {spec.path} "
                                         "(remove one)")
                continue
            index.conflicts.pop(name, None)  # a later directory overrides the conflict too
            index.devices[name] = (priority, spec)
    return index
