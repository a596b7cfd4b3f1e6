"""Container updates and evictions plugins ask for in their replies (CreateContainer,
UpdateContainer, StopContainer, Synchronize) or on their own (UpdateContainers), merged per
container across plugins under the same ownership rules as adjustments."""

from __future__ import annotations

from collections.abc import Sequence

from cri.nri import resources
from cri.nri.api import api_pb2 as nri
from cri.nri.owners import Conflict, Owners


class Updates:
    def __init__(self, owners: Owners | None = None, *, creating: str = "") -> None:
        self._owners = owners or Owners()
        self._creating = creating  # a container being created is adjusted, never updated
        self._by_id: dict[str, nri.ContainerUpdate] = {}
        self.evictions: list[nri.ContainerEviction] = []

    def add(self, plugin: str, updates: Sequence[nri.ContainerUpdate],
            evictions: Sequence[nri.ContainerEviction] = ()) -> None:
        for u in updates:
            if not u.container_id:
                raise Conflict(f"NRI plugin {plugin} asked to update a container without an id")
            if u.container_id == self._creating:
                raise Conflict(f"NRI plugin {plugin} asked to update container "
                               f"{u.container_id[:13]} while it is being created")
            res = u.linux.resources
            for field, key in resources.changed_fields(res):
                self._owners.claim(u.container_id, field, key, plugin)
            merged = self._by_id.get(u.container_id)
            if merged is None:
                merged = self._by_id[u.container_id] = nri.ContainerUpdate(
                    container_id=u.container_id, ignore_failure=u.ignore_failure)
            else:
                merged.ignore_failure = merged.ignore_failure and u.ignore_failure
            merged.linux.resources.MergeFrom(res)
        self.evictions.extend(evictions)

    def pop(self, ctr_id: str) -> nri.LinuxResources | None:
        """Take out the changes asked for ``ctr_id`` (the container a CRI update is for)."""
        u = self._by_id.pop(ctr_id, None)
        return u.linux.resources if u is not None else None

    @property
    def updates(self) -> list[nri.ContainerUpdate]:
        return list(self._by_id.values())
