"""Registry authentication, sans-IO: WWW-Authenticate challenges (RFC 7235), the CRI AuthConfig
credentials, Docker/OCI bearer token requests and a token cache.

The registry client feeds this module headers and bodies and sends the requests it describes;
nothing here does I/O, so every rule is tested with byte vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

TOKEN_DEFAULT_TTL = 60.0  # the token spec's default when expires_in is absent
EXPIRY_MARGIN = 5.0  # renew a little early rather than send a token that dies in flight
TOKEN_CACHE_MAX = 1024  # entries; expired ones are dropped first when the cache is full

_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: nothing that could split a header


class AuthError(ValueError):
    """Unusable credentials or an unusable answer from a token server."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in one WWW-Authenticate value, e.g.
    ``Bearer realm="https://auth/token",service="reg",scope="repository:a:pull", Basic realm="x"``.

    Schemes and parameter names are lowercased (they are case-insensitive); values are kept as
    sent. Never raises: parsing stops at the first malformed challenge (an unterminated quoted
    string, a stray character), keeping the well-formed challenges before it, so a broken header
    leads to "no usable challenge" rather than an exception in the client.
    """
    out: list[Challenge] = []
    i, n = 0, len(header)

    def skip_ws(j: int) -> int:
        while j < n and header[j] in " \t":
            j += 1
        return j

    while i < n:
        i = skip_ws(i)
        while i < n and header[i] == ",":
            i = skip_ws(i + 1)
        m = _TCHAR.match(header, i)
        if not m:
            break
        scheme, i = m.group().lower(), m.end()
        params: dict[str, str] = {}
        i = skip_ws(i)
        # A token68 credential (rare in challenges) instead of parameters.
        t = _TOKEN68.match(header, i)
        if t and (skip_ws(t.end()) == n or header[skip_ws(t.end())] == ","):
            params[""] = t.group()
            i = t.end()
        while i < n:
            i = skip_ws(i)
            k = _TCHAR.match(header, i)
            if not k:
                break
            j = skip_ws(k.end())
            if j >= n or header[j] != "=":
                break  # the next challenge's scheme
            key, i = k.group().lower(), skip_ws(j + 1)
            if i < n and header[i] == '"':
                quoted = _quoted(header, i)
                if quoted is None:
                    return out  # unterminated: this challenge is unusable, drop it
                value, i = quoted
            else:
                v = _TCHAR.match(header, i)
                value = v.group() if v else ""
                i = v.end() if v else i
            params[key] = value
            i = skip_ws(i)
            if i < n and header[i] == ",":
                i += 1
        out.append(Challenge(scheme, params))
    return out


def _quoted(s: str, i: int) -> tuple[str, int] | None:
    """The quoted-string starting at ``s[i]`` (a '"') unescaped, and the index after it."""
    buf, i = [], i + 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            buf.append(s[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(buf), i + 1
        buf.append(c)
        i += 1
    return None


@dataclass(frozen=True)
class Credentials:
    """The CRI AuthConfig fields."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password"
    identity_token: str = ""  # an OAuth2 refresh token
    registry_token: str = ""  # a bearer token to send as is

    @classmethod
    def from_auth_field(cls, auth: str) -> Credentials:
        """Credentials from the base64 ``auth`` field alone (``user:password``; the password may
        itself contain ':'). Raises AuthError (a ValueError) when it is not that."""
        return cls(auth=auth).resolved()

    def resolved(self) -> Credentials:
        """``auth`` decoded into username and password (explicit fields win)."""
        if not self.auth or self.username:
            return self
        try:
            raw = base64.b64decode(self.auth, validate=True).decode()
        except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII input, bad UTF-8
            raise AuthError("auth is not base64 of \"user:password\"") from exc
        user, sep, password = raw.partition(":")
        if not sep:
            raise AuthError("auth must decode to \"user:password\"")
        return Credentials(user, password, "", self.identity_token, self.registry_token)

    @property
    def identity(self) -> str:
        """What distinguishes one caller's cached tokens (and shared pulls) from another's: ""
        when anonymous, else a SHA-256 fingerprint of all the credential material. Keying on
        the username alone would hand a token earned with the right password to a caller with
        the same username and a wrong one; the fingerprint itself reveals no secret."""
        c = self.resolved()
        if not (c.username or c.password or c.identity_token or c.registry_token):
            return ""
        material = "\0".join((c.username, c.password, c.identity_token, c.registry_token))
        return "sha256:" + hashlib.sha256(material.encode()).hexdigest()


def basic_header(creds: Credentials) -> str | None:
    c = creds.resolved()
    if not c.username:
        return None
    token = base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
    return f"Basic {token}"


@dataclass(frozen=True)
class TokenRequest:
    method: str  # GET or POST
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str] | None = None


def scope_for(repository: str) -> str:
    return f"repository:{repository}:pull"


def credentials_in_clear(challenge: Challenge, creds: Credentials) -> bool:
    """Whether asking ``challenge``'s realm for a token with ``creds`` would send a secret (the
    Basic password or the refresh token) over plain HTTP. The realm is whatever the registry's
    challenge names - any host, any scheme - so a registry reached over TLS could otherwise
    have the password sent in clear, readable by anyone on the path to that host."""
    if urlsplit(challenge.params.get("realm", "")).scheme != "http":  # urlsplit lowercases it
        return False
    c = creds.resolved()
    return bool(c.username or c.identity_token)


def static_bearer(creds: Credentials) -> str | None:
    """``Bearer <registry_token>`` when the caller holds a registry token: it is sent as is, with
    no request to the token server (token_request refuses such credentials)."""
    return f"Bearer {creds.registry_token}" if creds.registry_token else None


def token_request(challenge: Challenge, scope: str, creds: Credentials) -> TokenRequest:
    """The request that gets a bearer token for ``scope`` (Docker token auth spec; OAuth2 with a
    refresh token when the caller has an identity token).

    Credentials with a registry_token need no request (see static_bearer): AuthError.
    """
    if creds.registry_token:
        raise AuthError("a registry token is sent as is; there is no token to request")
    realm = challenge.params.get("realm", "")
    if urlsplit(realm).scheme not in ("http", "https"):
        raise AuthError(f"bearer challenge has no usable realm: {realm!r}")
    service = challenge.params.get("service", "")
    scopes = [s for s in (challenge.params.get("scope", ""), scope) if s]
    c = creds.resolved()
    if c.identity_token:
        form = {"grant_type": "refresh_token", "refresh_token": c.identity_token,
                "service": service, "scope": " ".join(dict.fromkeys(scopes)),
                "client_id": "pycri"}
        return TokenRequest("POST", realm, {}, {}, form)
    params = {"service": service} if service else {}
    params["scope"] = " ".join(dict.fromkeys(scopes))
    headers = {}
    basic = basic_header(c)
    if basic:
        headers["Authorization"] = basic
    return TokenRequest("GET", realm, params, headers)


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # on the caller's clock
    issued_at: float | None = None  # the server's issued_at (informational), epoch seconds
    refresh_token: str = ""  # an OAuth2 server may hand out a new refresh token


def _rfc3339(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_token_response(body: bytes, now: float) -> Token:
    """The token server's JSON answer: ``token`` (Docker) or ``access_token`` (OAuth2), the
    optional ``expires_in`` (default 60 s) and ``issued_at``.

    The expiry is counted from ``now`` (when the answer arrived), not from ``issued_at``: the
    server's clock may be skewed against ours, and a skew of a minute would make every token look
    expired on arrival. ``issued_at`` is kept for logging; a malformed one is ignored.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"token server answered with something that is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AuthError("token server answer is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise AuthError("token server answer has no token")
    if not _HEADER_SAFE.fullmatch(value):
        raise AuthError("token server answer has a token with spaces or control characters")
    ttl = data.get("expires_in", TOKEN_DEFAULT_TTL)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl < float("inf"):
        ttl = TOKEN_DEFAULT_TTL
    refresh = data.get("refresh_token")
    return Token(value, now + float(ttl), _rfc3339(data.get("issued_at")),
                 refresh if isinstance(refresh, str) else "")


CacheKey = tuple[str, str, str, str]  # realm, service, scope, credential identity


class TokenCache:
    """Bearer tokens by (realm, service, scope, credential identity), handed out until
    EXPIRY_MARGIN seconds before they expire. Bounded: at most ``max_entries`` tokens."""

    def __init__(self, max_entries: int = TOKEN_CACHE_MAX) -> None:
        self._tokens: dict[CacheKey, Token] = {}
        self._max = max_entries

    @staticmethod
    def key(challenge: Challenge, scope: str, creds: Credentials) -> CacheKey:
        p = challenge.params
        return (p.get("realm", ""), p.get("service", ""), scope, creds.identity)

    def get(self, key: CacheKey, now: float) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires_at - EXPIRY_MARGIN <= now:
            self._tokens.pop(key, None)
            return None
        return token.value

    def put(self, key: CacheKey, token: Token) -> None:
        self._tokens.pop(key, None)
        while self._tokens and len(self._tokens) >= self._max:
            # Full: the token that dies first goes first (expired ones, if any, among them).
            del self._tokens[min(self._tokens, key=lambda k: self._tokens[k].expires_at)]
        self._tokens[key] = token

    def __len__(self) -> int:
        return len(self._tokens)
