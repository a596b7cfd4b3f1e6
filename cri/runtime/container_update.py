"""UpdateContainerResources (live, through `runc update`) and UpdatePodSandboxResources (the pod
cgroup, swap kept off)."""

from __future__ import annotations

import asyncio
import json
import logging

from cri.api import api_pb2
from cri.errors import FailedPrecondition, Internal, InvalidArgument
from cri.runtime import container_spec
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerState
from sandbox.cgroups import Resources
from sandbox.errors import CgroupError
from sandbox.oci import spec as ocispec
from sandbox.oci.errors import OCIRuntimeError
from sandbox.oom import clamp_oom_score_adj

log = logging.getLogger(__name__)


def _rewrite_spec(ctr: Container, resources: dict[str, object]) -> None:
    """Keep config.json in step, so ContainerStatus verbose and later execs see the new limits."""
    path = ctr.bundle / "config.json"
    spec = json.loads(path.read_bytes())
    devices = spec.get("linux", {}).get("resources", {}).get("devices")
    spec.setdefault("linux", {})["resources"] = {**resources,
                                                 **({"devices": devices} if devices else {})}
    ocispec.write_bundle(ctr.bundle, spec)


async def update_container_resources(rt: Runtime, ctr_id: str,
                                     res: api_pb2.LinuxContainerResources) -> None:
    ctr = rt.containers.lookup(ctr_id)
    pod = rt.sandboxes.lookup(ctr.meta.pod_id)
    resources = container_spec.resources(res, rt.container_features(pod.meta.cgroup_parent))
    async with rt.lock(ctr.id):
        if ctr.status.state not in (ContainerState.CREATED, ContainerState.RUNNING):
            raise FailedPrecondition(f"container {ctr.id} is {ctr.status.state.value}: its "
                                     "resources cannot be updated")
        try:
            await rt.oci.update(ctr.id, resources, rt.exec_dir)
        except OCIRuntimeError as exc:
            raise InvalidArgument(f"cannot update resources of container {ctr.id}: {exc}") from exc
        await asyncio.to_thread(_rewrite_spec, ctr, resources)
        stored = api_pb2.LinuxContainerResources()
        stored.CopyFrom(res)
        stored.oom_score_adj = clamp_oom_score_adj(res.oom_score_adj) if res.oom_score_adj else \
            ctr.config.linux.resources.oom_score_adj  # runc cannot change it on a live process
        ctr.status.resources = stored.SerializeToString()
        rt.containers.save(ctr)
    log.info("container %s resources updated", ctr.id)


async def update_pod_sandbox_resources(rt: Runtime, pod_id: str,
                                       res: api_pb2.LinuxContainerResources) -> None:
    pod = rt.sandboxes.lookup(pod_id)
    try:
        await rt.cgroups.create_pod(pod.meta.cgroup_parent, Resources(
            res.memory_limit_in_bytes or None, cpu_shares=res.cpu_shares or None,
            cpu_quota=res.cpu_quota or None, cpu_period=res.cpu_period or None))
    except CgroupError as exc:
        raise InvalidArgument(f"cannot update pod sandbox {pod.id} resources: {exc}") from exc
    except OSError as exc:
        raise Internal(f"cannot update pod sandbox {pod.id} resources: {exc}") from exc
