"""StartContainer: NRI StartContainer, `runc start` on a CREATED container -> RUNNING, NRI
PostStartContainer."""

from __future__ import annotations

import logging
import time

from cri.api import api_pb2
from cri.errors import DeadlineExceeded, FailedPrecondition, Internal
from cri.runtime import nri_events
from cri.runtime.container_exit import oom_kills, publish
from cri.runtime.daemon import Runtime
from cri.store.container import ContainerState
from sandbox import cgroups
from sandbox.oci.errors import OCIRuntimeError, OCITimeout

log = logging.getLogger(__name__)


async def start_container(rt: Runtime, ctr_id: str) -> None:
    ctr = rt.containers.lookup(ctr_id)
    async with rt.lock(ctr.id):
        if ctr.status.state is not ContainerState.CREATED or ctr.status.started_at:
            raise FailedPrecondition(
                f"container {ctr.id} is {ctr.status.state.value}, not created: it cannot be "
                "started (again)")
        pod = rt.sandboxes.get(ctr.meta.pod_id)
        if pod is None or not pod.ready:
            raise FailedPrecondition(f"pod sandbox {ctr.meta.pod_id} of container {ctr.id} "
                                     "is not ready")
        await nri_events.start_container(rt, pod, ctr)  # a plugin's refusal fails the start
        # Set first: the process may exit (and conmon report it) before `runc start` returns.
        ctr.status.started_at = time.time_ns()
        if rt.cgroups.systemd_cgroup:
            # What an exit compares with once systemd has removed the container's scope
            # (container_exit); with cgroupfs the container's cgroup outlives its process.
            rt.oom_baselines[ctr.id] = sum(
                oom_kills(d) for d in cgroups.pod_cgroup_dirs(pod.meta.cgroup_parent))
        try:
            await rt.oci(ctr.meta.handler).start(ctr.id)
        except OCITimeout as exc:
            ctr.status.started_at = 0
            raise DeadlineExceeded(f"container start timed out: {exc}") from exc
        except OCIRuntimeError as exc:
            ctr.status.started_at = 0
            raise Internal(f"container start failed: {exc}") from exc
        # Already EXITED: the exit handler published STARTED (then STOPPED) itself.
        announce = ctr.status.state is ContainerState.CREATED
        if announce:
            ctr.set_state(ContainerState.RUNNING)
            publish(rt, ctr, api_pb2.ContainerEventType.CONTAINER_STARTED_EVENT)
        rt.containers.save(ctr)
    log.info("container %s started", ctr.id)
    await nri_events.post_start_container(rt, pod, ctr)
