"""Start-up recovery: read pods back from disk and reconcile them with what is still running.

Infra processes run on under conmon while the daemon is down. Exits that happened meanwhile are
in conmon's exit files (the exit watcher reads them when it starts); a pod whose infra is gone
without one (the node rebooted, /run was wiped) is NOTREADY too. A creation that a crash
interrupted is torn down from the paths its metadata recorded.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from cri.runtime import container_remove
from cri.runtime.container_exit import container_exited
from cri.runtime.daemon import Runtime
from cri.runtime.sandbox_remove import teardown
from cri.store.container import Container, ContainerState
from cri.store.sandbox import Sandbox, SandboxState
from sandbox.oci.exec_sync import kill_orphaned_execs

log = logging.getLogger(__name__)


async def _finish_unfinished(rt: Runtime, pod: Sandbox) -> None:
    log.warning("pod sandbox %s was being created when the daemon stopped; tearing it down",
                pod.id)
    pod.status.network_ready = True  # ADD may have half-run: DEL releases whatever it got
    try:
        await teardown(rt, pod)
    except Exception:
        log.exception("teardown of unfinished pod sandbox %s failed", pod.id)
    rt.sandboxes.discard(pod.id)


async def _reconcile(rt: Runtime, pod: Sandbox) -> None:
    if pod.status.state is not SandboxState.READY:
        return
    if rt.exits.read_exit(pod.meta.infra_id) is not None:
        return  # the exit watcher's first scan records the code
    state = await rt.oci(pod.meta.handler).state(pod.meta.infra_id)
    if state is None or state.get("status") not in ("running", "created", "paused"):
        log.warning("infra of pod sandbox %s is gone; marking it NOTREADY", pod.id)
        pod.set_state(SandboxState.NOTREADY)
        rt.sandboxes.save(pod)
    elif pod.status.network_ready:
        # The node may have changed under a running pod (a flushed bridge, a lost lease):
        # CNI CHECK says so in the log, without holding up start-up.
        rt.spawn(_check_network(rt, pod))


async def _check_network(rt: Runtime, pod: Sandbox) -> None:
    problem = await rt.network.check(pod)
    if problem:
        log.warning("pod sandbox %s: CNI CHECK failed after restart: %s", pod.id, problem)
    else:
        log.info("pod sandbox %s: network checked after restart", pod.id)


async def _finish_unfinished_container(rt: Runtime, ctr: Container) -> None:
    log.warning("container %s was being created when the daemon stopped; removing it", ctr.id)
    try:
        await container_remove.teardown(rt, ctr)
    except Exception:
        log.exception("teardown of unfinished container %s failed", ctr.id)
    rt.containers.discard(ctr.id)


async def _reconcile_container(rt: Runtime, ctr: Container) -> None:
    if ctr.status.state not in (ContainerState.CREATED, ContainerState.RUNNING):
        return
    if rt.exits.read_exit(ctr.id) is not None:
        return  # the exit watcher's first scan records the code
    state = await rt.oci(ctr.meta.handler).state(ctr.id)
    if state is None or state.get("status") == "stopped":
        # Gone without an exit record (a reboot wiped it): the code is unknowable.
        log.warning("container %s is gone and left no exit code; marking it exited", ctr.id)
        container_exited(rt, ctr, 255, datetime.now(UTC))
        ctr.status.reason = "Unknown"
        ctr.status.message = "the container's process disappeared while pycri was down"
        rt.containers.save(ctr)


async def recover(rt: Runtime) -> None:
    done, unfinished = rt.sandboxes.load()
    ctrs, ctrs_unfinished = rt.containers.load()
    rt.handlers.check_recorded({p.meta.handler for p in [*done, *unfinished]} |
                               {c.meta.handler for c in [*ctrs, *ctrs_unfinished]})
    for ctr in ctrs:  # layers of a container's image stay, whatever happens to the image
        rt.images.store.pin(ctr.meta.chain_ids)
        for image_id in ctr.meta.image_mounts.values():
            rec = rt.images.store.images.get(image_id)
            if rec is not None:
                rt.images.store.pin(rec.chain_ids)
    # Execs that were in flight when the daemon died must not run on past their timeout.
    killed = await asyncio.to_thread(kill_orphaned_execs, rt.exec_dir)
    if killed:
        log.warning("killed %d processes of ExecSync calls cut short by the restart", killed)
    # Exits are watched before anything is torn down: stopping an infra waits for its exit.
    rt.exits.start()
    await asyncio.gather(*(_finish_unfinished_container(rt, c) for c in ctrs_unfinished))
    await asyncio.gather(*(_finish_unfinished(rt, p) for p in unfinished))
    await asyncio.gather(*(_reconcile(rt, p) for p in done),
                         *(_reconcile_container(rt, c) for c in ctrs))
