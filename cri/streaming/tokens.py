"""Single-use, short-lived tokens that stand for a pending exec/attach/port-forward request.

The Exec, Attach and PortForward RPCs do not stream anything themselves: they park the request
here and return a URL holding the token. Whoever presents the token to the streaming server
first gets the request; the token is gone from that moment on, so a leaked URL cannot start a
second process. Tokens that nobody uses expire after ``ttl`` seconds.

Expiry is lazy (checked on every ``issue``/``take``) so an idle daemon runs no timer for it.
Because the TTL is the same for every token and the clock is monotonic, insertion order is also
expiry order: pruning only ever looks at the oldest entries.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits of randomness; 43 characters once base64url-encoded
MAX_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str
    request: object
    expires: float


class TokenStore:
    """Maps random URL-safe tokens to opaque request objects; each token can be taken once."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 max_size: int = MAX_TOKENS) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._ttl = ttl
        self._clock = clock
        self._max_size = max_size
        # Insertion order is expiry order (see the module doc). OrderedDict rather than dict:
        # popping from the front of a plain dict leaves holes that every later "oldest" lookup
        # scans over again, which turns a burst of expiries quadratic.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def issue(self, request: object, kind: str = "") -> str:
        """Park ``request`` and return its token.

        ``kind`` binds the token to one URL kind (``exec``, ``attach``, ``portforward``): a token
        issued for port-forward cannot be replayed on /exec to get a request of the wrong type.
        """
        if request is None:
            raise ValueError("None cannot be parked: take() uses it to mean 'no such token'")
        now = self._clock()
        self._prune(now)
        # A flood of unused tokens (a client calling Exec in a loop) must not grow memory
        # without bound: beyond the cap the oldest pending request is forgotten.
        while len(self._entries) >= self._max_size:
            self._entries.popitem(last=False)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._entries[token] = _Entry(kind, request, now + self._ttl)
        return token

    def take(self, token: str, kind: str = "") -> object | None:
        """The request parked under ``token``, removing it.

        None if the token is unknown, expired or was issued for another kind. A token presented
        with the wrong kind is still consumed: any use of a token spends it.
        """
        now = self._clock()
        self._prune(now)
        entry = self._entries.pop(token, None)
        if entry is None or entry.expires <= now or entry.kind != kind:
            return None
        return entry.request

    def pending(self, token: str, kind: str = "") -> bool:
        """Whether ``token`` could still be taken for ``kind`` (does not spend it)."""
        now = self._clock()
        self._prune(now)
        entry = self._entries.get(token)
        return entry is not None and entry.expires > now and entry.kind == kind

    def _prune(self, now: float) -> None:
        entries = self._entries
        while entries and next(iter(entries.values())).expires <= now:
            entries.popitem(last=False)
