"""RemovePodSandbox: stop if needed, then remove everything the pod had (its containers, infra,
netns, mounts, cgroup, run and state dirs). Idempotent: an unknown id succeeds."""

from __future__ import annotations

import asyncio
import logging
import shutil

from cri.api import api_pb2
from cri.runtime import container_remove, infra, nri_events
from cri.runtime.container_exit import publish_pod
from cri.runtime.daemon import Runtime
from cri.runtime.sandbox_status import pod_sandbox_status
from cri.runtime.sandbox_stop import stop
from cri.store.sandbox import Sandbox

log = logging.getLogger(__name__)


async def remove_pod_sandbox(rt: Runtime, pod_id: str) -> None:
    async with rt.locked_pod(pod_id) as pod:
        if pod is None:
            log.info("RemovePodSandbox: %s not found; nothing to remove", pod_id)
            return
        view = nri_events.pod_view(rt, pod)
        await teardown(rt, pod)
        last = pod_sandbox_status(rt, pod.id, False).status
        async with rt.nri.gate.shared():  # a joining plugin has it in its snapshot or hears of this
            rt.sandboxes.delete(pod)
            await nri_events.remove_pod_sandbox(rt, view)
        rt.prune_stats()
        publish_pod(rt, pod.id, api_pb2.ContainerEventType.CONTAINER_DELETED_EVENT, last)
    rt.forget_lock(pod.id)
    log.info("pod sandbox %s removed", pod.id)


async def teardown(rt: Runtime, pod: Sandbox) -> None:
    """Everything but the state dir, in reverse order of creation. Also used by recovery for
    a creation that a crash interrupted."""
    await stop(rt, pod)
    for ctr in rt.containers.of_pod(pod.id):
        async with rt.lock(ctr.id):
            if rt.containers.get(ctr.id) is ctr:
                await container_remove.remove(rt, ctr)
        rt.forget_lock(ctr.id)
    await infra.destroy(rt, pod)
    if pod.meta.cgroup_created:
        await rt.cgroups.remove_pod(pod.meta.cgroup_parent)
    await asyncio.to_thread(shutil.rmtree, pod.meta.run_dir, True)
