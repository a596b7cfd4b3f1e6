"""Name reservation and id-prefix lookup (containerd's registrar and truncindex).

Names are reserved before any work starts, so two concurrent RunPodSandbox calls for the same
pod cannot both proceed; a failed attempt releases its name.
"""

from __future__ import annotations

import bisect

from cri.errors import AlreadyExists, InvalidArgument, NotFound


class NameRegistrar:
    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}

    def reserve(self, name: str, key: str) -> None:
        owner = self._by_name.get(name)
        if owner is not None and owner != key:
            raise AlreadyExists(f"name {name!r} is reserved for {owner}")
        self._by_name[name] = key

    def release(self, name: str) -> None:
        self._by_name.pop(name, None)

    def owner(self, name: str) -> str | None:
        return self._by_name.get(name)


class IdIndex:
    """Sorted ids; a unique prefix resolves to its full id."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def add(self, ident: str) -> None:
        i = bisect.bisect_left(self._ids, ident)
        if i == len(self._ids) or self._ids[i] != ident:
            self._ids.insert(i, ident)

    def remove(self, ident: str) -> None:
        i = bisect.bisect_left(self._ids, ident)
        if i < len(self._ids) and self._ids[i] == ident:
            del self._ids[i]

    def matches(self, prefix: str) -> list[str]:
        i = bisect.bisect_left(self._ids, prefix)
        out = []
        while i < len(self._ids) and self._ids[i].startswith(prefix):
            out.append(self._ids[i])
            i += 1
        return out

    def resolve(self, prefix: str, kind: str = "id") -> str:
        """The one id starting with ``prefix``; NotFound or InvalidArgument (ambiguous)."""
        if not prefix:
            raise InvalidArgument(f"{kind} must not be empty")
        found = self.matches(prefix)
        if not found:
            raise NotFound(f"{kind} {prefix!r} not found")
        if len(found) > 1 and prefix not in found:
            raise InvalidArgument(f"{kind} prefix {prefix!r} is ambiguous ({len(found)} matches)")
        return prefix if prefix in found else found[0]
