"""Image references: strict parsing and docker.io normalisation, sans-IO.

The grammar is the docker/distribution one:

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] component ( "/" component )*
    component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    domain     := host [ ":" port ]          (host: DNS labels, or an [IPv6] literal)
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex          (sha256: 64, sha384: 96, sha512: 128 lowercase hex)

The first component is a domain only when it contains '.' or ':' or is exactly "localhost"
(Docker's rule); otherwise the whole name is a repository path on docker.io. A name is at most
255 characters. ``busybox`` normalises to ``docker.io/library/busybox:latest``, as every CRI
runtime does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"  # what old Docker clients wrote; the same registry
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")
_ID = re.compile(r"(?:sha256:)?([a-f0-9]{64})")
_ID_PREFIX = re.compile(r"(?:sha256:)?[a-f0-9]{3,64}")


class InvalidReference(ValueError):
    """Not an image reference; the message says what is wrong with it."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``domain`` is "" when the text named no registry (see normalize)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``domain/path`` (just ``path`` before normalisation when no domain was given)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def normalize(self) -> Reference:
        """Docker's defaults: docker.io, ``library/`` for official images, :latest if untagged."""
        domain = self.domain or DEFAULT_DOMAIN
        if domain == LEGACY_DOMAIN:
            domain = DEFAULT_DOMAIN
        path = self.path
        if domain == DEFAULT_DOMAIN and "/" not in path:
            path = OFFICIAL_PREFIX + path
        tag = DEFAULT_TAG if self.tag is None and self.digest is None else self.tag
        return replace(self, domain=domain, path=path, tag=tag)

    def with_domain(self, domain: str) -> Reference:
        return replace(self, domain=domain)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _check_digest(s: str, digest: str) -> None:
    algo, colon, hexpart = digest.partition(":")
    if not colon or not _ALGORITHM.fullmatch(algo) or not hexpart:
        raise InvalidReference(f"image reference {s!r}: digest {digest!r} is not algorithm:hex")
    want = _DIGEST_HEX_LEN.get(algo)
    if want is None:
        raise InvalidReference(f"image reference {s!r}: unsupported digest algorithm {algo!r}")
    if len(hexpart) != want or not _HEX.fullmatch(hexpart):
        raise InvalidReference(
            f"image reference {s!r}: a {algo} digest is {want} lowercase hex characters"
        )


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "", name


def parse(s: str) -> Reference:
    """Parse ``s`` as written (no defaults applied); InvalidReference if it is not one."""
    if not s:
        raise InvalidReference("image reference is empty")
    if not s.isascii() or any(c.isspace() for c in s):
        raise InvalidReference(f"image reference {s!r} contains whitespace or non-ASCII")
    rest, at, digest = s.partition("@")
    if at:
        _check_digest(s, digest)
    tag: str | None = None
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:  # a ':' after the last '/' starts a tag (before it, it is a port)
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"image reference {s!r}: tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], "
                "not starting with '.' or '-'"
            )
    if not rest:
        raise InvalidReference(f"image reference {s!r} has no repository name")
    if len(rest) > NAME_MAX:
        raise InvalidReference(f"image reference {s!r}: name longer than {NAME_MAX} characters")
    domain, path = _split_domain(rest)
    if domain and not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"image reference {s!r}: {domain!r} is not a valid registry host")
    if not _PATH.fullmatch(path):
        raise InvalidReference(
            f"image reference {s!r}: repository {path!r} must be lowercase alphanumeric "
            "components separated by '/' (joined within by '.', '_', '__' or '-')"
        )
    if not domain and _ID.fullmatch(s):
        raise InvalidReference(f"{s!r} is an image id, not a repository name")
    return Reference(domain=domain, path=path, tag=tag, digest=digest if at else None)


def parse_normalized(s: str) -> Reference:
    return parse(s).normalize()


def is_qualified(s: str) -> bool:
    """True when ``s`` names its registry (else the unqualified-search list applies).

    Raises InvalidReference when ``s`` is not a reference at all.
    """
    return bool(parse(s).domain)


def is_image_id(s: str) -> bool:
    """``sha256:<64 hex>`` or a bare 64-hex id."""
    return _ID.fullmatch(s) is not None


def image_id(s: str) -> str | None:
    """The full image id (``sha256:<hex>``) if ``s`` is one, with or without the prefix."""
    m = _ID.fullmatch(s)
    return f"sha256:{m.group(1)}" if m else None


def looks_like_id_prefix(s: str) -> bool:
    """A hex prefix (3 to 64 characters, optionally ``sha256:``) that may name an image by id."""
    return _ID_PREFIX.fullmatch(s) is not None
