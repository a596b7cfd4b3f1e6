"""What happens when conmon reports a container's exit: state, reason (OOMKilled when the
kernel's OOM killer struck in its cgroup), a STOPPED event, and NRI's StopContainer; and the
container events themselves, the pods' own included."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

from cri.api import api_pb2
from cri.runtime import nri_events
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerState
from sandbox.cgroups import pod_cgroup_dirs

log = logging.getLogger(__name__)


def oom_killed(rt: Runtime, ctr: Container, code: int) -> bool:
    """conmon's ``oom`` marker, or the cgroup's own OOM-kill counter (with cgroupfs the cgroup
    still exists: runc removes it only on delete). With the systemd driver the container's
    scope goes with its last process, often before conmon has read its counter: then a
    SIGKILL exit counts as an OOM kill when the pod's (hierarchical) counter grew since the
    container started (container_start records it)."""
    baseline = rt.oom_baselines.pop(ctr.id, None)  # popped on every path: one per start
    if (rt.oci(ctr.meta.handler).persist_dir(ctr.id) / "oom").exists():
        return True
    try:
        dirs = pod_cgroup_dirs(ctr.meta.cgroup_path)
    except Exception:  # a malformed path never blocks recording an exit
        return False
    if any(oom_kills(d) for d in dirs):
        return True
    pod = rt.sandboxes.get(ctr.meta.pod_id)
    if code != 137 or baseline is None or pod is None or any(d.is_dir() for d in dirs):
        return False
    return sum(oom_kills(d) for d in pod_cgroup_dirs(pod.meta.cgroup_parent)) > baseline


def oom_kills(cgroup: Path) -> int:
    """The OOM kills counted in ``cgroup`` and below it (v1 memory.oom_control, v2
    memory.events); 0 where neither can be read."""
    for name in ("memory.oom_control", "memory.events"):
        try:
            text = (cgroup / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "oom_kill":
                return int(parts[1])
    return 0


def container_exited(rt: Runtime, ctr: Container, code: int, exited_at: datetime) -> None:
    if ctr.status.state in (ContainerState.EXITED,):
        return
    st = ctr.status
    # A StartContainer still waiting for `runc start` (started_at is set first) whose process
    # already exited: STARTED goes out now, so STOPPED never overtakes it; StartContainer then
    # sees EXITED and publishes nothing.
    starting = st.state is ContainerState.CREATED and st.started_at != 0
    st.exit_code = code
    st.finished_at = int(exited_at.timestamp() * 1e9) or time.time_ns()
    if st.started_at and st.finished_at < st.started_at:
        st.finished_at = st.started_at
    if oom_killed(rt, ctr, code):
        st.reason = "OOMKilled"
        pod = rt.sandboxes.get(ctr.meta.pod_id)
        where = pod.config.metadata if pod is not None else api_pb2.PodSandboxMetadata()
        rt.metrics.oom_killed(where.namespace, where.name, ctr.config.metadata.name)
    else:
        st.reason = "Completed" if code == 0 else "Error"
    ctr.set_state(ContainerState.EXITED)
    rt.containers.save(ctr)
    log.info("container %s exited with %d (%s)", ctr.id, code, st.reason)
    if starting:
        publish(rt, ctr, api_pb2.ContainerEventType.CONTAINER_STARTED_EVENT)
    publish(rt, ctr, api_pb2.ContainerEventType.CONTAINER_STOPPED_EVENT)
    nri_events.container_exited(rt, ctr)


def publish(rt: Runtime, ctr: Container, kind: api_pb2.ContainerEventType.ValueType) -> None:
    if not rt.events.subscribers:
        return
    from cri.runtime.container_status import status_message

    event = _event(rt, ctr.meta.pod_id, ctr.id, kind)
    # A removed container is gone from the store; its last status still goes out.
    if all(s.id != ctr.id for s in event.containers_statuses):
        event.containers_statuses.append(status_message(rt, ctr))
    rt.events.publish(event)


def publish_pod(rt: Runtime, pod_id: str, kind: api_pb2.ContainerEventType.ValueType,
                status: api_pb2.PodSandboxStatus | None = None) -> None:
    """An event about the pod sandbox itself (its id as the container id), as containerd sends
    them: the kubelet's Evented PLEG learns of a sandbox's start, death and removal only so
    (it relists every 300 s), and ignores an event without the sandbox's status: a removed
    pod's last ``status`` is handed in."""
    if not rt.events.subscribers:
        return
    event = _event(rt, pod_id, pod_id, kind)
    if status is not None:
        event.pod_sandbox_status.CopyFrom(status)
    rt.events.publish(event)


def _event(rt: Runtime, pod_id: str, subject: str, kind: api_pb2.ContainerEventType.ValueType
           ) -> api_pb2.ContainerEventResponse:
    from cri.runtime.container_status import status_message
    from cri.runtime.sandbox_status import pod_sandbox_status

    event = api_pb2.ContainerEventResponse(
        container_id=subject, container_event_type=kind, created_at=time.time_ns(),
        containers_statuses=[status_message(rt, c) for c in rt.containers.of_pod(pod_id)],
    )
    if rt.sandboxes.get(pod_id) is not None:
        event.pod_sandbox_status.CopyFrom(pod_sandbox_status(rt, pod_id, False).status)
    return event
