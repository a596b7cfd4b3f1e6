"""RemoveContainer: forced when running; removes the runc state, the rootfs mount and writable
layer, the state dir, and unpins the image's layers. Idempotent: an unknown id succeeds."""

from __future__ import annotations

import asyncio
import logging
import shutil

from cri.api import api_pb2
from cri.errors import Internal, NotFound
from cri.image.rootfs import unmount
from cri.runtime import nri_events
from cri.runtime.container_exit import publish
from cri.runtime.container_stop import stop
from cri.runtime.daemon import Runtime
from cri.store.container import Container
from sandbox.oci.errors import OCIRuntimeError

log = logging.getLogger(__name__)


async def remove_container(rt: Runtime, ctr_id: str) -> None:
    try:
        ctr = rt.containers.lookup(ctr_id)
    except NotFound:
        log.info("RemoveContainer: %s not found; nothing to remove", ctr_id)
        return
    async with rt.lock(ctr.id):
        if rt.containers.get(ctr.id) is not ctr:
            return  # removed while we waited
        await remove(rt, ctr)
    rt.forget_lock(ctr.id)


async def remove(rt: Runtime, ctr: Container) -> None:
    """The caller holds the container's lock."""
    await stop(rt, ctr, 0)
    pod = rt.sandboxes.get(ctr.meta.pod_id)
    pod_view = nri_events.pod_view(rt, pod) if pod is not None else None
    view = await nri_events.container_view(ctr)  # while the bundle is there
    await teardown(rt, ctr)
    async with rt.nri.gate.shared():  # a joining plugin has it in its snapshot or hears of this
        rt.containers.delete(ctr)
        await nri_events.remove_container(rt, pod_view, view)
    rt.prune_stats()
    log.info("container %s removed", ctr.id)
    publish(rt, ctr, api_pb2.ContainerEventType.CONTAINER_DELETED_EVENT)


async def teardown(rt: Runtime, ctr: Container) -> None:
    """Everything but the store entry; also used by recovery for an unfinished creation."""
    try:
        await rt.oci(ctr.meta.handler).delete(ctr.id, force=True)
    except OCIRuntimeError as exc:
        raise Internal(f"cannot delete container {ctr.id}: {exc}") from exc
    await asyncio.to_thread(unmount, ctr.rootfs)
    volumes = ctr.dir / "image-volumes"
    if volumes.is_dir():
        for d in volumes.iterdir():
            await asyncio.to_thread(unmount, d)
    for rec_id in ctr.meta.image_mounts.values():
        rec = rt.images.store.images.get(rec_id)
        if rec is not None:
            rt.images.store.unpin(rec.chain_ids)
    rt.images.store.unpin(ctr.meta.chain_ids)
    (rt.exits_dir / ctr.id).unlink(missing_ok=True)
    rt.exits.forget(ctr.id)
    await asyncio.to_thread(shutil.rmtree, rt.oci(ctr.meta.handler).persist_dir(ctr.id), True)
    await asyncio.to_thread(shutil.rmtree, ctr.dir, True)
