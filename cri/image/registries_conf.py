"""containers-registries.conf(5), version 2: where a reference's name is pulled from. Sans-IO
apart from ``load`` and the watcher's stat.

Keys read: ``unqualified-search-registries``; ``[[registry]]`` with ``prefix`` (defaults to
``location``), ``location`` (defaults to ``prefix``), ``insecure``, ``blocked``,
``mirror-by-digest-only`` and ``[[registry.mirror]]`` (``location``, ``insecure``,
``pull-from-mirror``). Other keys (``short-name-mode``, ``[aliases]``, credential helpers, the
v1 ``[registries.*]`` tables) are accepted and ignored.

Matching: a prefix matches a name equal to it or continuing with '/' (never in the middle of a
component: ``gcr.io`` does not match ``gcr.io.example.com/x``). A ``*.example.com`` prefix
matches any registry host that is a sub-domain of example.com, with or without a port, and
stands for that whole host. Only the entry with the longest prefix is used. Its mirrors come
first, in file order, then its location; each gets the rest of the name appended. A blocked
entry refuses the pull; a name no entry matches is pulled from its own registry over TLS.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")
_PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
_HOST = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
)
_DOMAIN = re.compile(rf"(?:{_HOST.pattern}|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")


class RegistriesConfError(ValueError):
    """The file is not a valid registries.conf; the message names the file and the key."""


class BlockedRegistry(Exception):
    """The reference matches a registry the configuration blocks."""


@dataclass(frozen=True)
class Endpoint:
    location: str  # host[:port][/path], the rest of the reference name already appended
    insecure: bool  # plain HTTP allowed, TLS certificates not verified
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
    pull_from_mirror: str = "all"  # "all" | "digest-only" | "tag-only"

    def serves(self, by_digest: bool) -> bool:
        if self.pull_from_mirror == "digest-only":
            return by_digest
        if self.pull_from_mirror == "tag-only":
            return not by_digest
        return True


@dataclass(frozen=True)
class Registry:
    prefix: str
    location: str  # "" for a wildcard prefix: the matched host is the location
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()

    @property
    def wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def match(self, name: str) -> int:
        """How many leading characters of ``name`` this entry stands for; -1 if no match."""
        if self.wildcard:
            host = name.split("/", 1)[0]
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            return len(host) if hostname.endswith(self.prefix[1:]) else -1
        if name == self.prefix or name.startswith(self.prefix + "/"):
            return len(self.prefix)
        return -1


@dataclass(frozen=True)
class RegistriesConf:
    search: tuple[str, ...] = ()
    registries: tuple[Registry, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: Path) -> RegistriesConf:
        return load(path)

    @classmethod
    def parse(cls, text: str, source: str = "registries.conf") -> RegistriesConf:
        return parse(text, source)

    def unqualified_search_registries(self) -> list[str]:
        return list(self.search)

    def find(self, name: str) -> tuple[Registry, int] | None:
        """The entry with the longest matching prefix, and how much of ``name`` it matched."""
        best: tuple[Registry, int] | None = None
        for reg in self.registries:
            n = reg.match(name)
            if n >= 0 and (best is None or len(reg.prefix) > len(best[0].prefix)):
                best = (reg, n)
        return best

    def endpoints(self, name: str, *, by_digest: bool = False) -> list[Endpoint]:
        """Where to pull the normalised ``domain/path`` ``name`` from, in the order to try.

        ``by_digest`` says the pull names a digest; tag pulls skip mirrors that only serve
        digests (``mirror-by-digest-only``, ``pull-from-mirror = "digest-only"``).
        Raises BlockedRegistry when the matching entry is blocked.
        """
        found = self.find(name)
        if found is None:
            return [Endpoint(location=name, insecure=False, mirror=False)]
        reg, n = found
        if reg.blocked:
            raise BlockedRegistry(
                f"pulling {name!r} is blocked by the registries.conf entry {reg.prefix!r}"
            )
        rest = name[n:]
        out: list[Endpoint] = []
        if by_digest or not reg.mirror_by_digest_only:
            out = [Endpoint(m.location + rest, m.insecure, True)
                   for m in reg.mirrors if m.serves(by_digest)]
        location = reg.location or name[:n]
        out.append(Endpoint(location + rest, reg.insecure, False))
        return out


def _get(table: dict[str, Any], key: str, kind: type[_T], where: str, default: _T) -> _T:
    value = table.get(key, default)
    if not isinstance(value, kind):
        raise RegistriesConfError(
            f"{where}{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _location(value: str, where: str) -> str:
    """A prefix/location value, trailing '/' removed, checked for the shapes the man page allows."""
    value = value.rstrip("/")
    if "://" in value:
        raise RegistriesConfError(f"{where}: {value!r} must not have a URL scheme")
    if "@" in value or ":" in value.partition("/")[2]:
        raise RegistriesConfError(f"{where}: {value!r}: tags and digests are not supported here")
    host = value.partition("/")[0]
    if value and not _DOMAIN.fullmatch(host):
        raise RegistriesConfError(f"{where}: {host!r} is not a registry host[:port]")
    return value


def _registry(raw: object, where: str) -> Registry:
    if not isinstance(raw, dict):
        raise RegistriesConfError(f"{where}: must be a table")
    raw_prefix = _get(raw, "prefix", str, where + ".", "").rstrip("/")
    location = _location(_get(raw, "location", str, where + ".", ""), f"{where}.location")
    if raw_prefix.startswith("*."):
        if "/" in raw_prefix or ":" in raw_prefix or not _HOST.fullmatch(raw_prefix[2:]):
            raise RegistriesConfError(
                f"{where}.prefix: a wildcard must be '*.' followed by a host name, got {raw_prefix!r}"
            )
        if location:
            raise RegistriesConfError(f"{where}.location: not allowed with a wildcard prefix")
        prefix = raw_prefix
    else:
        prefix = _location(raw_prefix, f"{where}.prefix") or location
        location = location or prefix
    if not prefix:
        raise RegistriesConfError(f"{where}: needs a prefix or a location")
    mirrors: list[Mirror] = []
    for j, m in enumerate(_get(raw, "mirror", list, where + ".", [])):
        mwhere = f"{where}.mirror[{j}]"
        if not isinstance(m, dict):
            raise RegistriesConfError(f"{mwhere}: must be a table")
        mloc = _location(_get(m, "location", str, mwhere + ".", ""), f"{mwhere}.location")
        if not mloc:
            raise RegistriesConfError(f"{mwhere}.location: must be set")
        pull_from = _get(m, "pull-from-mirror", str, mwhere + ".", "") or "all"
        if pull_from not in _PULL_FROM_MIRROR:
            raise RegistriesConfError(
                f"{mwhere}.pull-from-mirror: {pull_from!r} is not one of {', '.join(_PULL_FROM_MIRROR)}"
            )
        mirrors.append(Mirror(mloc, _get(m, "insecure", bool, mwhere + ".", False), pull_from))
    return Registry(
        prefix=prefix,
        location=location,
        insecure=_get(raw, "insecure", bool, where + ".", False),
        blocked=_get(raw, "blocked", bool, where + ".", False),
        mirror_by_digest_only=_get(raw, "mirror-by-digest-only", bool, where + ".", False),
        mirrors=tuple(mirrors),
    )


def parse(text: str, source: str = "registries.conf") -> RegistriesConf:
    """The configuration ``text`` describes; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"{source}: not valid TOML: {exc}") from exc
    top = f"{source}: "
    search = _get(data, "unqualified-search-registries", list, top, [])
    for i, host in enumerate(search):
        if not isinstance(host, str) or not _DOMAIN.fullmatch(host):
            raise RegistriesConfError(
                f"{top}unqualified-search-registries[{i}]: {host!r} is not a registry host[:port]"
            )
    regs: list[Registry] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(_get(data, "registry", list, top, [])):
        reg = _registry(raw, f"{top}registry[{i}]")
        if reg.prefix in seen:
            raise RegistriesConfError(
                f"{top}registry[{i}].prefix: {reg.prefix!r} already used by registry[{seen[reg.prefix]}]"
            )
        seen[reg.prefix] = i
        regs.append(reg)
    return RegistriesConf(search=tuple(search), registries=tuple(regs))


def load(path: Path) -> RegistriesConf:
    """The file's configuration; a missing file is an empty one (pull from the named registry)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RegistriesConf()
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistriesConfError(f"{path}: cannot read: {exc}") from exc
    return parse(text, str(path))


class RegistriesConfWatcher:
    """The current configuration, re-read only when (mtime_ns, size, inode) changed.

    A missing file is the empty configuration. A broken edit raises RegistriesConfError on every
    call until the file is fixed (the pull fails loudly rather than using stale rules).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._conf = RegistriesConf()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> RegistriesConf:
        stamp = self._stat()
        if stamp != self._stamp:
            # Stat before reading: an edit racing the read changes the stamp again, so the
            # next call re-reads rather than keeping a half-seen file.
            self._conf = load(self.path) if stamp is not None else RegistriesConf()
            self._stamp = stamp
        return self._conf
