"""Image references: parsing and docker.io normalisation, sans-IO.

The grammar is the one the docker/distribution reference package defines (name components of
lowercase alphanumerics joined by '.', '_', '__' or '-'+, an optional registry host[:port] as the
first component, an optional tag and an optional digest). ``busybox`` normalises to
``docker.io/library/busybox:latest``, as every CRI runtime does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_ID = re.compile(r"^(?:sha256:)?([a-f0-9]{64})$")
_ID_PREFIX = re.compile(r"^(?:sha256:)?[a-f0-9]{3,64}$")


class InvalidReference(ValueError):
    """Not an image reference; the message says what is wrong with it."""


@dataclass(frozen=True)
class Reference:
    domain: str  # "" when the reference named no registry
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def normalize(self) -> Reference:
        """Docker's defaults: docker.io, library/ for official images, :latest if untagged."""
        domain = self.domain or DEFAULT_DOMAIN
        if domain in LEGACY_DOMAINS:
            domain = DEFAULT_DOMAIN
        path = self.path
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = OFFICIAL_PREFIX + path
        tag = self.tag if (self.tag or self.digest) else DEFAULT_TAG
        return replace(self, domain=domain, path=path, tag=tag)

    def with_domain(self, domain: str) -> Reference:
        return replace(self, domain=domain)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _split_domain(name: str) -> tuple[str, str]:
    # Docker's rule: the first component is a registry when it has a '.' or ':' or is
    # "localhost"; otherwise the whole name is a path (on docker.io).
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return "", name


def parse(s: str) -> Reference:
    """Parse ``s`` as written (no defaults applied); InvalidReference if it is not one."""
    if not s:
        raise InvalidReference("image reference is empty")
    if any(c.isspace() for c in s):
        raise InvalidReference(f"image reference {s!r} contains whitespace")
    rest, at, digest = s.partition("@")
    if at and not _DIGEST.match(digest):
        raise InvalidReference(f"image reference {s!r}: {digest!r} is not a valid digest")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:  # a ':' after the last '/' starts a tag (else it is a registry port)
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidReference(f"image reference {s!r}: {tag!r} is not a valid tag")
    domain, path = _split_domain(rest)
    if domain and not _DOMAIN.match(domain):
        raise InvalidReference(f"image reference {s!r}: {domain!r} is not a valid registry")
    if not _PATH.match(path):
        raise InvalidReference(
            f"image reference {s!r}: repository {path!r} must be lowercase components "
            "separated by '/'"
        )
    if not domain and _ID.match(path):
        raise InvalidReference(f"{s!r} is an image id, not a repository name")
    if len(rest) > NAME_MAX:
        raise InvalidReference(f"image reference {s!r}: name longer than {NAME_MAX} characters")
    return Reference(domain=domain, path=path, tag=tag, digest=digest or None)


def parse_normalized(s: str) -> Reference:
    return parse(s).normalize()


def is_qualified(s: str) -> bool:
    """True when ``s`` names its registry explicitly (else registries.conf's search list applies)."""
    return bool(parse(s).domain)


def image_id(s: str) -> str | None:
    """The full image id (``sha256:<hex>``) if ``s`` is one, with or without the prefix."""
    m = _ID.match(s)
    return f"sha256:{m.group(1)}" if m else None


def looks_like_id_prefix(s: str) -> bool:
    """A short hex prefix (at least 3 characters) that may name an image by id."""
    return bool(_ID_PREFIX.match(s))
