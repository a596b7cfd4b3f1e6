"""The NRI events of the CRI calls: what the RPC modules call at each point of a pod's and a
container's life, with the pod and container as NRI shows them.

Which failures count: a plugin refusing RunPodSandbox, CreateContainer (or its adjustments
failing), StartContainer, UpdateContainer or UpdatePodSandbox fails the CRI call, as with
containerd and CRI-O. Stop, remove and post-event refusals are logged: they report what has
happened, and must not make a pod impossible to stop or remove.

With no plugin subscribed to an event, its call returns before building anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from cri.errors import CRIError
from cri.nri import adjust, resources, validate, views
from cri.nri.api import api_pb2 as nri
from cri.nri.owners import Owners
from cri.nri.plugin import PluginError
from cri.nri.service import NRI
from cri.nri.updates import Updates
from cri.store.container import Container, ContainerState, ContainerStore
from cri.store.sandbox import Sandbox, SandboxStore
from sandbox.cgroups.driver import CgroupDriver
from sandbox.cgroups.features import Features

log = logging.getLogger(__name__)

Spec = dict[str, Any]


class Runtime(Protocol):
    """The parts of cri.runtime.daemon.Runtime used here (a seam, so that this module stays
    out of the daemon's import circle while the RPC modules in it call in)."""

    nri: NRI
    nri_stops: dict[str, asyncio.Task[None]]
    cgroups: CgroupDriver
    sandboxes: SandboxStore
    containers: ContainerStore

    def container_features(self, pod_cgroup: str) -> Features: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

_STATES = {
    ContainerState.CREATED: nri.CONTAINER_CREATED, ContainerState.RUNNING: nri.CONTAINER_RUNNING,
    ContainerState.EXITED: nri.CONTAINER_STOPPED, ContainerState.UNKNOWN: nri.CONTAINER_UNKNOWN,
}


# Views ------------------------------------------------------------------------------------
def pod_view(rt: Runtime, pod: Sandbox) -> nri.PodSandbox:
    md, cfg = pod.config.metadata, pod.config
    out = nri.PodSandbox(id=pod.id, name=md.name, uid=md.uid, namespace=md.namespace,
                         labels=cfg.labels, annotations=cfg.annotations,
                         runtime_handler=pod.meta.runtime_handler, pid=pod.status.pid,
                         ips=pod.status.ips)
    linux = out.linux
    linux.cgroup_parent = pod.meta.cgroup_parent
    linux.cgroups_path = rt.cgroups.container_cgroup(pod.meta.cgroup_parent, pod.meta.infra_id)
    if pod.meta.netns_path:
        linux.namespaces.add(type="network", path=pod.meta.netns_path)
    if pod.status.pid:
        for ns in ("ipc", "uts") if pod.meta.shm_path else ("uts",):
            linux.namespaces.add(type=ns, path=f"/proc/{pod.status.pid}/ns/{ns}")
    linux.pod_overhead.CopyFrom(resources.from_cri(cfg.linux.overhead))
    linux.pod_resources.CopyFrom(resources.from_cri(cfg.linux.resources))
    linux.resources.CopyFrom(linux.pod_resources)
    return out


def container_info(ctr: Container) -> views.ContainerInfo:
    st = ctr.status
    return views.ContainerInfo(
        id=ctr.id, pod_id=ctr.meta.pod_id, name=ctr.config.metadata.name,
        state=_STATES[st.state], labels=dict(ctr.config.labels), image=ctr.meta.image,
        image_id=ctr.meta.image_id, created_at=ctr.meta.created_at, started_at=st.started_at,
        finished_at=st.finished_at, exit_code=st.exit_code, reason=st.reason,
        message=st.message, pid=st.pid if st.state is ContainerState.RUNNING else 0)


def read_spec(ctr: Container) -> Spec:
    """The container's OCI spec as runc got it ({} once its bundle is gone)."""
    try:
        spec: Spec = json.loads((ctr.bundle / "config.json").read_bytes())
    except (OSError, ValueError):
        return {}
    return spec


async def container_view(ctr: Container) -> nri.Container:
    spec = await asyncio.to_thread(read_spec, ctr)
    return views.container(spec, container_info(ctr))


async def snapshot(rt: Runtime) -> tuple[list[nri.PodSandbox], list[nri.Container]]:
    """Every pod and container, for a plugin joining (Synchronize)."""
    pods = [pod_view(rt, p) for p in rt.sandboxes]
    ctrs = list(rt.containers)
    specs = await asyncio.to_thread(lambda: [read_spec(c) for c in ctrs])
    return pods, [views.container(s, container_info(c)) for s, c in zip(specs, ctrs, strict=True)]


def check_resources(cg: Features) -> Callable[[Spec], None]:
    """A check that OCI resources a plugin adjusted fit the container's cgroup (ValueError
    if not): what pycri leaves out of CRI requests it refuses from a plugin, which asked for
    it by name."""
    def check(res: Spec) -> None:
        cpu = res.get("cpu") or {}
        if (cpu.get("cpus") or cpu.get("mems")) and not cg.has("cpuset"):
            raise ValueError("cpusets: the cpuset controller does not reach container cgroups")
        if res.get("hugepageLimits") and not cg.has("hugetlb"):
            raise ValueError("hugepage limits: the hugetlb controller does not reach "
                             "container cgroups")
        if res.get("pids") and not cg.has("pids"):
            raise ValueError("pids limit: the pids controller does not reach container cgroups")
        for key in res.get("unified") or {}:
            why = "cgroup v1 host" if not cg.v2 else cg.unified_refusal(key)
            if why:
                raise ValueError(f"unified cgroup resource {key!r}: {why}")
    return check


def _failed(exc: PluginError | ValueError) -> CRIError:
    return CRIError(str(exc))


async def _notify(rt: Runtime, event: int, request: Callable[[], Any]) -> None:
    """Relay an event whose refusal is only logged (building the request only if some plugin
    takes it)."""
    if not rt.nri.subscribed(event):
        return
    try:
        await rt.nri.relay(event, request())
    except PluginError as exc:
        log.warning("%s", exc)


# Pods -------------------------------------------------------------------------------------
async def run_pod_sandbox(rt: Runtime, pod: Sandbox) -> None:
    if rt.nri.subscribed(nri.RUN_POD_SANDBOX):
        try:
            await rt.nri.relay(nri.RUN_POD_SANDBOX, nri.RunPodSandboxRequest(pod=pod_view(rt, pod)))
        except PluginError as exc:
            raise _failed(exc) from exc


async def undo_run_pod_sandbox(rt: Runtime, pod: Sandbox) -> None:
    """A pod that failed after its RunPodSandbox event goes as if stopped and removed, so
    plugins that took it release what they gave it."""
    await stop_pod_sandbox(rt, pod)
    await remove_pod_sandbox(rt, pod_view(rt, pod))


async def stop_pod_sandbox(rt: Runtime, pod: Sandbox) -> None:
    await _notify(rt, nri.STOP_POD_SANDBOX,
                  lambda: nri.StopPodSandboxRequest(pod=pod_view(rt, pod)))


async def remove_pod_sandbox(rt: Runtime, view: nri.PodSandbox) -> None:
    await _notify(rt, nri.REMOVE_POD_SANDBOX, lambda: nri.RemovePodSandboxRequest(pod=view))


async def update_pod_sandbox(rt: Runtime, pod: Sandbox, overhead: nri.LinuxResources,
                             res: nri.LinuxResources) -> None:
    if rt.nri.subscribed(nri.UPDATE_POD_SANDBOX):
        request = nri.UpdatePodSandboxRequest(pod=pod_view(rt, pod),
                                              overhead_linux_resources=overhead,
                                              linux_resources=res)
        try:
            await rt.nri.relay(nri.UPDATE_POD_SANDBOX, request)
        except PluginError as exc:
            raise _failed(exc) from exc


async def post_update_pod_sandbox(rt: Runtime, pod: Sandbox) -> None:
    await _notify(rt, nri.POST_UPDATE_POD_SANDBOX,
                  lambda: nri.PostUpdatePodSandboxRequest(pod=pod_view(rt, pod)))


# Containers -------------------------------------------------------------------------------
async def create_container(rt: Runtime, pod: Sandbox, info: views.ContainerInfo, spec: Spec
                           ) -> Updates:
    """Each subscribed plugin in turn sees the container and adjusts ``spec`` (in place), then
    validators check the outcome (cri/nri/validate.py); the updates and evictions of other
    containers they asked for, to apply once it exists."""
    owners = Owners()
    updates = Updates(owners, creating=info.id)
    if not (rt.nri.subscribed(nri.CREATE_CONTAINER)
            or rt.nri.subscribed(nri.VALIDATE_CONTAINER_ADJUSTMENT)):
        return updates
    pod_msg = pod_view(rt, pod)
    check = check_resources(rt.container_features(pod.meta.cgroup_parent))
    validators = [p for p in rt.nri.plugins if p.subscribed(nri.VALIDATE_CONTAINER_ADJUSTMENT)]
    validation = nri.ValidateContainerAdjustmentRequest(
        pod=pod_msg, container=views.container(spec, info),
        plugins=[nri.PluginInstance(name=p.name, index=p.idx) for p in rt.nri.plugins],
    ) if validators else None

    def request() -> nri.CreateContainerRequest:
        return nri.CreateContainerRequest(pod=pod_msg, container=views.container(spec, info))

    try:
        async for plugin, reply in rt.nri.relay_each(nri.CREATE_CONTAINER, request):
            assert isinstance(reply, nri.CreateContainerResponse)
            if reply.HasField("adjust"):
                adjust.apply(spec, reply.adjust, plugin=plugin.full_name, ctr_id=info.id,
                             owners=owners, check=check)
                if validation is not None:
                    validation.adjust.MergeFrom(reply.adjust)
            updates.add(plugin.full_name, reply.update, reply.evict)
        if validation is not None:
            validation.update.extend(updates.updates)
            validation.owners.CopyFrom(validate.owning_plugins(owners))
            await validate.validate(validators, validation)
    except (PluginError, ValueError) as exc:
        raise _failed(exc) from exc
    return updates


async def undo_create_container(rt: Runtime, pod: Sandbox, info: views.ContainerInfo,
                                spec: Spec) -> None:
    """A creation that failed after its CreateContainer event: plugins see it stop and go, so
    those that took it release what they gave it."""
    if not (rt.nri.subscribed(nri.STOP_CONTAINER) or rt.nri.subscribed(nri.REMOVE_CONTAINER)):
        return
    pod_msg, view = pod_view(rt, pod), views.container(spec, info)
    await _notify(rt, nri.STOP_CONTAINER,
                  lambda: nri.StopContainerRequest(pod=pod_msg, container=view))
    await _notify(rt, nri.REMOVE_CONTAINER,
                  lambda: nri.RemoveContainerRequest(pod=pod_msg, container=view))


async def _notify_container(rt: Runtime, event: int, make: Callable[..., Any], pod: Sandbox,
                            ctr: Container) -> None:
    """A container event whose refusal is only logged, ``make`` its request type."""
    if rt.nri.subscribed(event):
        view = await container_view(ctr)
        await _notify(rt, event, lambda: make(pod=pod_view(rt, pod), container=view))


async def post_create_container(rt: Runtime, pod: Sandbox, ctr: Container,
                                updates: Updates) -> None:
    """After the container exists: PostCreateContainer, then what plugins asked of others."""
    await _notify_container(rt, nri.POST_CREATE_CONTAINER, nri.PostCreateContainerRequest,
                            pod, ctr)
    await rt.nri.apply(updates)


async def start_container(rt: Runtime, pod: Sandbox, ctr: Container) -> None:
    if rt.nri.subscribed(nri.START_CONTAINER):
        view = await container_view(ctr)
        try:
            await rt.nri.relay(nri.START_CONTAINER, nri.StartContainerRequest(
                pod=pod_view(rt, pod), container=view))
        except PluginError as exc:
            raise _failed(exc) from exc


async def post_start_container(rt: Runtime, pod: Sandbox, ctr: Container) -> None:
    await _notify_container(rt, nri.POST_START_CONTAINER, nri.PostStartContainerRequest,
                            pod, ctr)


def container_exited(rt: Runtime, ctr: Container) -> None:
    """The StopContainer event, once per container, sent when it exits whatever stopped it
    (StopContainer, its own end, its pod's stop); StopContainer and RemoveContainer wait for
    it (``stop_sent``), so plugins see Stop before the CRI call returns and before Remove."""
    if rt.nri.subscribed(nri.STOP_CONTAINER) and ctr.id not in rt.nri_stops:
        rt.nri_stops[ctr.id] = rt.spawn(_stop_container(rt, ctr))


async def stop_sent(rt: Runtime, ctr: Container) -> None:
    task = rt.nri_stops.get(ctr.id)
    if task is not None:
        await asyncio.wait([task])  # its outcome is its own (logged there)


async def _stop_container(rt: Runtime, ctr: Container) -> None:
    pod = rt.sandboxes.get(ctr.meta.pod_id)
    if pod is None:
        return
    try:
        view = await container_view(ctr)
        updates = Updates()
        for plugin, reply in await rt.nri.relay(nri.STOP_CONTAINER, nri.StopContainerRequest(
                pod=pod_view(rt, pod), container=view)):
            assert isinstance(reply, nri.StopContainerResponse)
            updates.add(plugin.full_name, reply.update)
        await rt.nri.apply(updates)
    except (PluginError, ValueError) as exc:
        log.warning("%s", exc)
    except Exception:  # a detached task: nothing else would report it
        log.exception("NRI StopContainer of %s failed", ctr.id)


async def remove_container(rt: Runtime, pod_msg: nri.PodSandbox | None,
                           view: nri.Container) -> None:
    rt.nri_stops.pop(view.id, None)
    if pod_msg is not None:
        await _notify(rt, nri.REMOVE_CONTAINER,
                      lambda: nri.RemoveContainerRequest(pod=pod_msg, container=view))


async def update_container(rt: Runtime, pod: Sandbox, ctr: Container, res: Spec) -> Updates:
    """Plugins see the resources the update asks for and may change them (``res``, OCI,
    in place) or update other containers (returned, to apply afterwards)."""
    updates = Updates()
    if not rt.nri.subscribed(nri.UPDATE_CONTAINER):
        return updates
    view = await container_view(ctr)
    request = nri.UpdateContainerRequest(pod=pod_view(rt, pod), container=view,
                                         linux_resources=resources.from_oci(res))
    try:
        for plugin, reply in await rt.nri.relay(nri.UPDATE_CONTAINER, request):
            assert isinstance(reply, nri.UpdateContainerResponse)
            updates.add(plugin.full_name, reply.update, reply.evict)
        own = updates.pop(ctr.id)
        if own is not None:
            resources.merge(res, own)
            check_resources(rt.container_features(pod.meta.cgroup_parent))(res)
    except (PluginError, ValueError) as exc:
        raise _failed(exc) from exc
    return updates


async def post_update_container(rt: Runtime, pod: Sandbox, ctr: Container,
                                updates: Updates) -> None:
    await _notify_container(rt, nri.POST_UPDATE_CONTAINER, nri.PostUpdateContainerRequest,
                            pod, ctr)
    await rt.nri.apply(updates)
