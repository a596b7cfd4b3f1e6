"""Registry authentication, sans-IO: WWW-Authenticate challenges (RFC 7235), the CRI AuthConfig
credentials, Docker/OCI bearer token requests and a token cache.

The registry client feeds this module headers and bodies and sends the requests it describes;
nothing here does I/O, so every rule is tested with byte vectors.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TOKEN_DEFAULT_TTL = 60.0  # the token spec's default when expires_in is absent
EXPIRY_MARGIN = 5.0  # renew a little early rather than send a token that dies in flight

_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_TCHAR = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class AuthError(ValueError):
    """Unusable credentials or an unusable answer from a token server."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """All challenges in one WWW-Authenticate value, e.g.
    ``Bearer realm="https://auth/token",service="reg",scope="repository:a:pull", Basic realm="x"``.
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
                value, i = _quoted(header, i)
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


def _quoted(s: str, i: int) -> tuple[str, int]:
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
    raise AuthError("unterminated quoted string in WWW-Authenticate")


@dataclass(frozen=True)
class Credentials:
    """The CRI AuthConfig fields."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password"
    identity_token: str = ""  # an OAuth2 refresh token
    registry_token: str = ""  # a bearer token to send as is

    def resolved(self) -> Credentials:
        """``auth`` decoded into username and password (explicit fields win)."""
        if not self.auth or self.username:
            return self
        try:
            raw = base64.b64decode(self.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthError("auth is not base64 of \"user:password\"") from exc
        user, sep, password = raw.partition(":")
        if not sep:
            raise AuthError("auth must decode to \"user:password\"")
        return Credentials(user, password, "", self.identity_token, self.registry_token)

    @property
    def identity(self) -> str:
        """What distinguishes one caller's cached tokens from another's (never a secret)."""
        c = self.resolved()
        return c.username or ("identity-token" if c.identity_token else "")


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


def token_request(challenge: Challenge, scope: str, creds: Credentials) -> TokenRequest:
    """The request that gets a bearer token for ``scope`` (Docker token auth spec; OAuth2 with a
    refresh token when the caller has an identity token)."""
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
    expires_at: float


def parse_token_response(body: bytes, now: float) -> Token:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"token server answered with something that is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AuthError("token server answer is not a JSON object")
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise AuthError("token server answer has no token")
    ttl = data.get("expires_in", TOKEN_DEFAULT_TTL)
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        ttl = TOKEN_DEFAULT_TTL
    return Token(value, now + float(ttl))


CacheKey = tuple[str, str, str, str]  # realm, service, scope, credential identity


class TokenCache:
    def __init__(self) -> None:
        self._tokens: dict[CacheKey, Token] = {}

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
        self._tokens[key] = token
