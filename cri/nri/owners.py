"""Who set what: the plugins' claims on container fields within one CRI call.

Plugins are called in index order and each sees what earlier ones changed. Two plugins setting
the same field of the same container (an annotation, an env variable, a mount destination,
the memory limit, ...) is a conflict that fails the CRI call, naming both, rather than letting
the later one silently win (NRI's adaptation does the same). A plugin that removes a field
another set takes it over.
"""

from __future__ import annotations


class Conflict(ValueError):
    pass


class Owners:
    def __init__(self) -> None:
        self._owner: dict[tuple[str, str, str], str] = {}
        # OCI hooks add up rather than conflict: every plugin that added some, in order.
        self.hooks: dict[str, list[str]] = {}

    def add_hooks(self, ctr_id: str, plugin: str) -> None:
        self.hooks.setdefault(ctr_id, []).append(plugin)

    def claim(self, ctr_id: str, field: str, key: str, plugin: str) -> None:
        owner = self._owner.setdefault((ctr_id, field, key), plugin)
        if owner != plugin:
            what = f"{field} {key!r}" if key else field
            raise Conflict(f"NRI plugins {owner} and {plugin} both tried to set {what} of "
                           f"container {ctr_id[:13]}")

    def clear(self, ctr_id: str, field: str, key: str) -> None:
        self._owner.pop((ctr_id, field, key), None)

    def claims(self) -> list[tuple[str, str, str, str]]:
        """(container id, field, key, plugin) of every claim."""
        return [(*k, plugin) for k, plugin in self._owner.items()]
