"""UpdateContainerResources (live, through `runc update`) and UpdatePodSandboxResources (the pod
cgroup, swap kept off); NRI plugins see both first and may change a container's update, and
their own updates of containers go through the same `runc update` (update_from_nri)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any

from cri.api import api_pb2
from cri.errors import FailedPrecondition, Internal, InvalidArgument
from cri.nri import resources as nri_resources
from cri.nri.api import api_pb2 as nri
from cri.runtime import container_spec, nri_events
from cri.runtime.daemon import Runtime
from cri.store.container import Container, ContainerState
from sandbox.cgroups import Resources
from sandbox.errors import CgroupError
from sandbox.oci import spec as ocispec
from sandbox.oci.errors import OCIRuntimeError
from sandbox.oom import clamp_oom_score_adj

log = logging.getLogger(__name__)

Spec = dict[str, Any]


def _rewrite_spec(ctr: Container, resources: Spec) -> None:
    """Keep config.json in step, so ContainerStatus verbose and later execs see the new limits."""
    path = ctr.bundle / "config.json"
    spec = json.loads(path.read_bytes())
    devices = spec.get("linux", {}).get("resources", {}).get("devices")
    spec.setdefault("linux", {})["resources"] = {**resources,
                                                 **({"devices": devices} if devices else {})}
    ocispec.write_bundle(ctr.bundle, spec)


def _check_updatable(ctr: Container) -> None:
    if ctr.status.state not in (ContainerState.CREATED, ContainerState.RUNNING):
        raise FailedPrecondition(f"container {ctr.id} is {ctr.status.state.value}: its "
                                 "resources cannot be updated")


async def _apply(rt: Runtime, ctr: Container, resources: Spec,
                 stored: api_pb2.LinuxContainerResources) -> None:
    """`runc update` to ``resources``; config.json and the reported resources follow. The
    caller holds the container's lock."""
    try:
        await rt.oci(ctr.meta.handler).update(ctr.id, resources, rt.exec_dir)
    except OCIRuntimeError as exc:
        raise InvalidArgument(f"cannot update resources of container {ctr.id}: {exc}") from exc
    await asyncio.to_thread(_rewrite_spec, ctr, resources)
    ctr.status.resources = stored.SerializeToString()
    rt.containers.save(ctr)


def reported(resources: Spec, base: api_pb2.LinuxContainerResources
             ) -> api_pb2.LinuxContainerResources:
    """What ContainerStatus reports for OCI ``resources`` (``base`` for what they lack)."""
    out = api_pb2.LinuxContainerResources()
    out.CopyFrom(base)
    cpu, memory = resources.get("cpu") or {}, resources.get("memory") or {}
    out.cpu_shares, out.cpu_quota = cpu.get("shares", 0), cpu.get("quota", 0)
    out.cpu_period = cpu.get("period", 0)
    out.cpuset_cpus, out.cpuset_mems = cpu.get("cpus", ""), cpu.get("mems", "")
    out.memory_limit_in_bytes = memory.get("limit", 0)
    del out.hugepage_limits[:]
    for h in resources.get("hugepageLimits") or []:
        out.hugepage_limits.add(page_size=h["pageSize"], limit=h["limit"])
    out.unified.clear()
    out.unified.update(resources.get("unified") or {})
    return out


async def update_container_resources(rt: Runtime, ctr_id: str,
                                     res: api_pb2.LinuxContainerResources) -> None:
    ctr = rt.containers.lookup(ctr_id)
    pod = rt.sandboxes.lookup(ctr.meta.pod_id)
    resources = container_spec.resources(res, rt.container_features(pod.meta.cgroup_parent))
    async with rt.lock(ctr.id):
        _check_updatable(ctr)
        asked = copy.deepcopy(resources)
        others = await nri_events.update_container(rt, pod, ctr, resources)
        # As asked, unless a plugin changed it (then what the container got).
        stored = reported(resources, res) if resources != asked else copy.deepcopy(res)
        stored.oom_score_adj = clamp_oom_score_adj(res.oom_score_adj) if res.oom_score_adj else \
            ctr.config.linux.resources.oom_score_adj  # runc cannot change it on a live process
        await _apply(rt, ctr, resources, stored)
    log.info("container %s resources updated", ctr.id)
    await nri_events.post_update_container(rt, pod, ctr, others)


async def update_from_nri(rt: Runtime, ctr: Container, adj: nri.LinuxResources) -> None:
    """A plugin's update of a container: its current resources with the fields the plugin
    set, applied as UpdateContainerResources would."""
    pod = rt.sandboxes.lookup(ctr.meta.pod_id)
    async with rt.lock(ctr.id):
        if rt.containers.get(ctr.id) is not ctr:
            raise FailedPrecondition(f"container {ctr.id} was removed")
        _check_updatable(ctr)
        spec = await asyncio.to_thread(nri_events.read_spec, ctr)
        resources = {k: v for k, v in (spec.get("linux", {}).get("resources") or {}).items()
                     if k != "devices"}
        try:
            nri_resources.merge(resources, adj)
            nri_events.check_resources(rt.container_features(pod.meta.cgroup_parent))(resources)
        except ValueError as exc:
            raise InvalidArgument(f"container {ctr.id}: {exc}") from exc
        base = api_pb2.LinuxContainerResources()
        base.ParseFromString(ctr.status.resources or
                             ctr.config.linux.resources.SerializeToString())
        await _apply(rt, ctr, resources, reported(resources, base))
    log.info("container %s resources updated by an NRI plugin", ctr.id)


async def update_pod_sandbox_resources(rt: Runtime, pod_id: str,
                                       res: api_pb2.LinuxContainerResources) -> None:
    pod = rt.sandboxes.lookup(pod_id)
    await nri_events.update_pod_sandbox(rt, pod, nri.LinuxResources(),
                                        nri_resources.from_cri(res))
    try:
        await rt.cgroups.create_pod(pod.meta.cgroup_parent, Resources(
            res.memory_limit_in_bytes or None, cpu_shares=res.cpu_shares or None,
            cpu_quota=res.cpu_quota or None, cpu_period=res.cpu_period or None))
    except CgroupError as exc:
        raise InvalidArgument(f"cannot update pod sandbox {pod.id} resources: {exc}") from exc
    except OSError as exc:
        raise Internal(f"cannot update pod sandbox {pod.id} resources: {exc}") from exc
    await nri_events.post_update_pod_sandbox(rt, pod)
