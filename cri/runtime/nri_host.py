"""What NRI reaches of the runtime (cri.nri.service.Host): the snapshot a joining plugin is
synchronized with, and the container updates and evictions plugins ask for, carried out by the
same code as UpdateContainerResources and StopContainer. Wired by the server once recovery is
done, so plugins never see a half-recovered node."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cri.errors import CRIError
from cri.nri.api import api_pb2 as nri
from cri.runtime import container_stop, container_update, nri_events
from cri.runtime.daemon import Runtime

log = logging.getLogger(__name__)


class RuntimeHost:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def snapshot(self) -> tuple[list[nri.PodSandbox], list[nri.Container]]:
        return await nri_events.snapshot(self.rt)

    async def apply_updates(self, updates: Sequence[nri.ContainerUpdate],
                            evictions: Sequence[nri.ContainerEviction]
                            ) -> list[nri.ContainerUpdate]:
        failed = []
        for u in updates:
            try:
                ctr = self.rt.containers.lookup(u.container_id)
                await container_update.update_from_nri(self.rt, ctr, u.linux.resources)
            except CRIError as exc:
                log.log(logging.DEBUG if u.ignore_failure else logging.WARNING,
                        "NRI update of container %s failed: %s", u.container_id, exc.message)
                failed.append(u)
        for e in evictions:
            log.info("evicting container %s for an NRI plugin: %s", e.container_id,
                     e.reason or "no reason given")
            try:
                await container_stop.stop_container(self.rt, e.container_id, 0)
            except CRIError as exc:
                log.warning("NRI eviction of container %s failed: %s", e.container_id,
                            exc.message)
        return failed
