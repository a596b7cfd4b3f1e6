"""StopPodSandbox: stop every container, then the infra, and release the network.

Idempotent and forgiving, as the kubelet relies on: an unknown id, a pod already stopped, a
netns or plugin that is gone - all succeed, and the IP lease is released whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from cri.runtime import container_stop, infra, nri_events
from cri.runtime.daemon import Runtime
from cri.store.container import Container
from cri.store.sandbox import Sandbox, SandboxState
from sandbox import netns, shm

log = logging.getLogger(__name__)


async def stop_pod_sandbox(rt: Runtime, pod_id: str) -> None:
    async with rt.locked_pod(pod_id) as pod:
        if pod is None:
            log.info("StopPodSandbox: %s not found; nothing to stop", pod_id)
            return
        await stop(rt, pod)


async def stop(rt: Runtime, pod: Sandbox) -> None:
    """The pod's processes die and its network is released; its state dir stays for Remove."""
    await stop_containers(rt, pod)
    if not pod.status.stopped_at:  # once: a repeated StopPodSandbox is no news to plugins
        # Containers are stopped, the pod's infra and network are still there.
        await nri_events.stop_pod_sandbox(rt, pod)
    # The infra is killed while CNI DEL runs: DEL needs the netns pin, not the process.
    results = await asyncio.gather(
        infra.stop(rt, pod), _release_network(rt, pod), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    if pod.meta.shm_path:
        await asyncio.to_thread(shm.unmount_shm, Path(pod.meta.shm_path))
    if pod.status.state is SandboxState.READY or not pod.status.stopped_at:
        pod.set_state(SandboxState.NOTREADY)
        pod.status.stopped_at = time.time_ns()
        rt.sandboxes.save(pod)


async def stop_containers(rt: Runtime, pod: Sandbox) -> None:
    """Every container of the pod, at once and without grace (as containerd does: the kubelet
    has already stopped them gracefully when it stops a pod)."""
    async def one(ctr: Container) -> None:
        async with rt.lock(ctr.id):
            await container_stop.stop(rt, ctr, 0)

    results = await asyncio.gather(*(one(c) for c in rt.containers.of_pod(pod.id)),
                                   return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _release_network(rt: Runtime, pod: Sandbox) -> None:
    if not pod.meta.netns_path:
        return
    if pod.status.network_ready:
        await rt.network.teardown(pod)
        pod.status.network_ready = False
        rt.sandboxes.save(pod)
    await asyncio.to_thread(netns.remove, Path(pod.meta.netns_path))
