"""containers-registries.conf(5), version 2: where a reference is pulled from.

For a reference name the longest matching ``[[registry]]`` prefix wins (a prefix matches at a
'/' boundary, or a ``*.example.com`` wildcard matches sub-domains). Its mirrors are tried in
order, then its location, with the rest of the name appended to each; ``blocked`` refuses the
pull. Without a match the reference's own registry is used. The file is re-read when it
changes, so an operator's edit needs no daemon restart.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RegistriesConfError(ValueError):
    """The file is not a valid registries.conf; the message names the file and the key."""


class BlockedRegistry(Exception):
    """The reference matches a registry the configuration blocks."""


@dataclass(frozen=True)
class Endpoint:
    location: str  # host[:port][/path] with the rest of the reference name appended
    insecure: bool  # plain HTTP allowed, TLS not verified
    mirror: bool

    @property
    def host(self) -> str:
        return self.location.split("/", 1)[0]

    @property
    def repository(self) -> str:
        return self.location.split("/", 1)[1] if "/" in self.location else ""


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False


@dataclass(frozen=True)
class Registry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()

    def matches(self, name: str) -> bool:
        if self.prefix.startswith("*."):
            host = name.split("/", 1)[0]
            return host.endswith(self.prefix[1:])
        return name == self.prefix or name.startswith(self.prefix + "/")

    def rest(self, name: str) -> str:
        if self.prefix.startswith("*."):
            return name
        return name[len(self.prefix):]


@dataclass(frozen=True)
class RegistriesConf:
    search: tuple[str, ...] = ()
    registries: tuple[Registry, ...] = field(default_factory=tuple)

    def unqualified_search_registries(self) -> list[str]:
        return list(self.search)

    def endpoints(self, name: str) -> list[Endpoint]:
        """Where to pull ``name`` (a normalised ``domain/path``), in order."""
        matching = [r for r in self.registries if r.matches(name)]
        if not matching:
            return [Endpoint(location=name, insecure=False, mirror=False)]
        # Longest prefix wins; a wildcard ranks by its length too, as the man page says.
        reg = max(matching, key=lambda r: len(r.prefix))
        if reg.blocked:
            raise BlockedRegistry(f"registry {reg.prefix!r} is blocked in registries.conf")
        rest = reg.rest(name)
        if reg.prefix.startswith("*."):
            return [Endpoint(name, reg.insecure, False)]
        out = [Endpoint(m.location + rest, m.insecure, True) for m in reg.mirrors]
        out.append(Endpoint(reg.location + rest, reg.insecure, False))
        return out


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind):
        raise RegistriesConfError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def parse(text: str, source: str = "registries.conf") -> RegistriesConf:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"{source}: {exc}") from exc
    search = _get(data, "unqualified-search-registries", list, source, [])
    if not all(isinstance(s, str) and s for s in search):
        raise RegistriesConfError(f"{source}: unqualified-search-registries must be host names")
    regs = []
    for i, raw in enumerate(_get(data, "registry", list, source, [])):
        where = f"{source}: registry[{i}]"
        if not isinstance(raw, dict):
            raise RegistriesConfError(f"{where}: must be a table")
        location = _get(raw, "location", str, where, "").rstrip("/")
        prefix = _get(raw, "prefix", str, where, "").rstrip("/") or location
        if not prefix:
            raise RegistriesConfError(f"{where}: needs a prefix or a location")
        if prefix.startswith("*.") and location:
            raise RegistriesConfError(f"{where}.location: not allowed with a wildcard prefix")
        mirrors = []
        for j, m in enumerate(_get(raw, "mirror", list, where, [])):
            mwhere = f"{where}.mirror[{j}]"
            if not isinstance(m, dict):
                raise RegistriesConfError(f"{mwhere}: must be a table")
            mloc = _get(m, "location", str, mwhere, "").rstrip("/")
            if not mloc:
                raise RegistriesConfError(f"{mwhere}.location: must be set")
            mirrors.append(Mirror(mloc, _get(m, "insecure", bool, mwhere, False)))
        regs.append(Registry(
            prefix=prefix,
            location=location or prefix,
            insecure=_get(raw, "insecure", bool, where, False),
            blocked=_get(raw, "blocked", bool, where, False),
            mirrors=tuple(mirrors),
        ))
    return RegistriesConf(search=tuple(search), registries=tuple(regs))


def load(path: Path) -> RegistriesConf:
    """The file's configuration; a missing file is an empty one (pull from the named registry)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return RegistriesConf()
    except OSError as exc:
        raise RegistriesConfError(f"{path}: {exc.strerror}") from exc
    return parse(text, str(path))


class RegistriesConfWatcher:
    """The current configuration, re-read only when the file's identity or size changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._conf = RegistriesConf()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> RegistriesConf:
        stamp = self._stat()
        if stamp != self._stamp:
            self._conf = load(self.path)  # a broken edit raises; the old stamp stays
            self._stamp = stamp
        return self._conf
