"""RunPodSandbox: reserve the name, then build the pod step by step, each step registering its
undo first, so a failure at any point leaves nothing behind.

Order: pod dirs -> pod cgroup (swap off) -> pod files -> /dev/shm -> netns -> (CNI ADD and the
infra container run concurrently: the netns is pinned, so the infra can join it while the CNI
plugins wire it) -> NRI RunPodSandbox -> state committed -> READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from cri.api import api_pb2
from cri.errors import FailedPrecondition, InvalidArgument
from cri.runtime import infra, nri_events, podspec
from cri.runtime.container_exit import publish_pod
from cri.runtime.daemon import Runtime
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus
from sandbox import cgroups, netns, podfiles, shm
from sandbox.cgroups import Resources
from sandbox.errors import SandboxError

log = logging.getLogger(__name__)


def sandbox_name(md: api_pb2.PodSandboxMetadata) -> str:
    return f"k8s_POD_{md.name}_{md.namespace}_{md.uid}_{md.attempt}"


async def run_pod_sandbox(rt: Runtime, config: api_pb2.PodSandboxConfig, handler: str) -> str:
    plan = podspec.plan(rt.config, rt.cgroups, config)  # every check that needs no side effect, first
    resolved = rt.handlers.resolve(handler).name
    if not plan.host_network:
        net = rt.network.readiness()
        if not net.ready:  # refuse before anything is made, not half-way through
            raise FailedPrecondition(f"pod network is not ready: {net.message}")
    pod_id = secrets.token_hex(32)
    name = sandbox_name(config.metadata)
    rt.sandboxes.names.reserve(name, pod_id)
    # The creation runs as its own task: if the client goes away mid-way, the task still
    # finishes (or undoes itself), and a pod the client never learnt about is removed, so a
    # retry with the same name is not refused.
    task = rt.spawn(_create(rt, pod_id, name, config, (handler, resolved), plan))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: _orphaned(rt, t))
        raise


def _orphaned(rt: Runtime, task: asyncio.Future[str]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    from cri.runtime.sandbox_remove import remove_pod_sandbox

    pod_id = task.result()
    log.warning("RunPodSandbox caller went away; removing pod sandbox %s", pod_id)
    rt.spawn(remove_pod_sandbox(rt, pod_id))


async def _create(rt: Runtime, pod_id: str, name: str, config: api_pb2.PodSandboxConfig,
                  handler: tuple[str, str], plan: podspec.PodPlan) -> str:
    """``handler``: the runtime_handler as asked for, and the configured handler it names."""
    run_dir = rt.run_dir / pod_id
    meta = SandboxMeta(
        id=pod_id,
        name=name,
        runtime_handler=handler[0],
        handler=handler[1],
        created_at=time.time_ns(),
        run_dir=str(run_dir),
        netns_path="" if plan.host_network else str(rt.network.netns_dir / f"pycri-{pod_id[:16]}"),
        cgroup_parent=plan.cgroup_parent,
        # Only a cgroup we make is ours to remove: one the kubelet made (in any hierarchy) is
        # the kubelet's. The decision is recorded before anything exists, so recovery after a
        # crash mid-creation still removes what we made.
        cgroup_created=not await asyncio.to_thread(_cgroup_anywhere, plan.cgroup_parent),
        hostname=plan.hostname,
        shm_path="" if plan.host_ipc else str(run_dir / "shm"),
        infra_id=pod_id,
    )
    pod = Sandbox(meta=meta, config=config, status=SandboxStatus(SandboxState.READY))
    async with contextlib.AsyncExitStack() as undo:
        undo.callback(rt.sandboxes.names.release, name)
        await asyncio.to_thread(rt.sandboxes.begin, pod)  # recovery can tear down from here on
        undo.callback(rt.sandboxes.discard, pod_id)
        run_dir.mkdir(mode=0o700, parents=True)
        undo.callback(shutil.rmtree, run_dir, True)
        # Also for a cgroup the kubelet made: swap is disabled for every pod, and the limits
        # are (re)applied; only one we made is removed again.
        await rt.cgroups.create_pod(plan.cgroup_parent, Resources(plan.memory_limit))
        if meta.cgroup_created:
            undo.push_async_callback(rt.cgroups.remove_pod, plan.cgroup_parent)
        await asyncio.to_thread(_write_pod_files, run_dir, config, plan)
        if meta.shm_path:
            await asyncio.to_thread(shm.mount_shm, Path(meta.shm_path))
            undo.callback(shm.unmount_shm, Path(meta.shm_path))
        if meta.netns_path:
            ns = Path(meta.netns_path)
            await asyncio.to_thread(netns.create, ns.name, ns.parent)
            undo.callback(netns.remove, ns)
            # DEL is registered before ADD: ADD can half-succeed (an IP leased, a veth made).
            undo.push_async_callback(rt.network.teardown, pod)
        undo.push_async_callback(infra.destroy, rt, pod)
        steps: list[Coroutine[Any, Any, object]] = [infra.create_and_start(rt, pod, plan)]
        if meta.netns_path:
            steps.append(rt.network.setup(pod))
        # Both always run to the end, so a failed ADD is never left dangling mid-flight.
        results = await asyncio.gather(*steps, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        pid = results[0]
        assert isinstance(pid, int)
        pod.status.pid = pid
        if meta.netns_path:
            ips = results[1]
            assert isinstance(ips, list)
            pod.status.ips = ips
            pod.status.network_ready = True
        # NRI plugins see the pod complete (pid, IPs) but before anyone else can: until their
        # RunPodSandbox hooks return it is not listed, and no container can be made in it. A
        # refusal undoes it all, the plugins told first (they may have given it something).
        async with rt.nri.gate.shared():
            undo.push_async_callback(nri_events.undo_run_pod_sandbox, rt, pod)
            await nri_events.run_pod_sandbox(rt, pod)
            rt.sandboxes.commit(pod)
        undo.pop_all()
    for kind in (api_pb2.ContainerEventType.CONTAINER_CREATED_EVENT,
                 api_pb2.ContainerEventType.CONTAINER_STARTED_EVENT):
        publish_pod(rt, pod_id, kind)
    log.info("pod sandbox %s (%s) is ready, ip %s", pod_id, name, ",".join(pod.status.ips) or "-")
    return pod_id


def _cgroup_anywhere(path: str) -> bool:
    return any(d.is_dir() for d in cgroups.pod_cgroup_dirs(path))


def _write_pod_files(run_dir: Path, config: api_pb2.PodSandboxConfig, plan: podspec.PodPlan) -> None:
    try:
        podfiles.write_hostname(run_dir, plan.hostname)
        dns = config.dns_config
        podfiles.write_resolv_conf(run_dir, list(dns.servers), list(dns.searches), list(dns.options))
    except (ValueError, SandboxError) as exc:
        raise InvalidArgument(str(exc)) from exc
