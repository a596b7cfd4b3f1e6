"""StopContainer: the stop signal (CRI, else the image's, else SIGTERM), SIGKILL once the timeout
has passed; idempotent. Processes left in the container's cgroup once its init is gone (execs
in a shared pid namespace) are killed too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime

from cri.errors import DeadlineExceeded, Internal, NotFound
from cri.runtime import nri_events
from cri.runtime.container_exit import container_exited
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerState
from sandbox import cgroups
from sandbox.errors import CgroupError
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError, OCITimeout

log = logging.getLogger(__name__)


async def stop_container(rt: Runtime, ctr_id: str, grace: int) -> None:
    """An unknown container is already stopped: success, as the kubelet expects."""
    try:
        ctr = rt.containers.lookup(ctr_id)
    except NotFound:
        log.info("StopContainer: %s not found; nothing to stop", ctr_id)
        return
    async with rt.lock(ctr.id):
        await stop(rt, ctr, grace)


async def stop(rt: Runtime, ctr: Container, grace: float) -> None:
    """The caller holds the container's lock; ``grace`` seconds before SIGKILL."""
    if ctr.status.state in (ContainerState.CREATED, ContainerState.RUNNING) and \
            not rt.exits.read_exit(ctr.id) and not rt.oci(ctr.meta.handler).monitor_alive(ctr.id):
        await _stop_unmonitored(rt, ctr)
    if ctr.status.state in (ContainerState.CREATED, ContainerState.RUNNING):
        exited = rt.exit_waiter(ctr.id)
        sig = ctr.meta.stop_signal if ctr.status.started_at else signal.SIGKILL
        graceful = grace > 0 and sig != signal.SIGKILL and not exited.done()
        if graceful and await _kill(rt, ctr, sig):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), grace)
        if not exited.done() and await _kill(rt, ctr, signal.SIGKILL, all_procs=True):
            try:
                await asyncio.wait_for(asyncio.shield(exited), rt.config.runtime.runtime_timeout)
            except TimeoutError as exc:
                raise DeadlineExceeded(f"container {ctr.id} did not exit after SIGKILL") from exc
        if not exited.done():
            # runc no longer knows a live init, yet conmon has not reported: wait for it briefly
            # (it writes the exit file as it reaps), else record that the process is gone.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), rt.config.runtime.runtime_timeout)
        rt.drop_exit_waiter(ctr.id)
    await asyncio.to_thread(_kill_leftovers, ctr)
    await nri_events.stop_sent(rt, ctr)  # plugins hear of the stop before the caller does


async def _stop_unmonitored(rt: Runtime, ctr: Container) -> None:
    """conmon is gone (it died with a daemon killed mid-create), so no exit file will come:
    kill the process and record the exit ourselves."""
    log.warning("container %s has no monitor any more; killing it directly", ctr.id)
    try:
        await rt.oci(ctr.meta.handler).kill_unmonitored(ctr.id,
                                                        rt.config.runtime.runtime_timeout)
    except OCITimeout as exc:
        raise DeadlineExceeded(f"container {ctr.id} did not exit: {exc}") from exc
    except OCIRuntimeError as exc:
        raise Internal(f"cannot stop container {ctr.id}: {exc}") from exc
    container_exited(rt, ctr, 128 + signal.SIGKILL, datetime.now(UTC))
    ctr.status.message = "the container's monitor (conmon) was gone; killed directly"
    rt.containers.save(ctr)


async def _kill(rt: Runtime, ctr: Container, sig: int, all_procs: bool = False) -> bool:
    """False when the container is already gone."""
    try:
        await rt.oci(ctr.meta.handler).kill(ctr.id, sig, all_procs=all_procs)
    except (OCINotFound, OCINotRunning):
        return False
    except OCIRuntimeError as exc:
        raise Internal(f"cannot signal container {ctr.id}: {exc}") from exc
    return True


def _kill_leftovers(ctr: Container) -> None:
    try:
        pids = cgroups.list_pids(ctr.meta.cgroup_path)
    except (CgroupError, OSError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        log.info("container %s: killed %d leftover processes", ctr.id, len(pids))
