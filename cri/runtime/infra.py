"""The pod's infra ("pause") container: the built-in catatonit pause, run by conmon + runc.

It holds the pod's network (the pinned netns), IPC and UTS namespaces, and its pid namespace
when the pod shares one. It needs no image, so it works offline and the kubelet's image garbage
collection can never remove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from pathlib import Path

from cri.errors import DeadlineExceeded, FailedPrecondition, Internal
from cri.image.auth import Credentials
from cri.image.manifest import parse_image_config
from cri.image.rootfs import mount_rootfs, unmount
from cri.image.store import ImageRecord
from cri.runtime import apparmor_profile
from cri.runtime.daemon import Runtime
from cri.runtime.podspec import PodPlan
from cri.store.sandbox import Sandbox
from sandbox.apparmor import RUNTIME_DEFAULT
from sandbox.oci import spec as ocispec
from sandbox.oci.errors import OCINotFound, OCINotRunning, OCIRuntimeError, OCITimeout
from sandbox.oom import clamp_oom_score_adj

log = logging.getLogger(__name__)

INFRA_OOM_SCORE_ADJ = -998  # the kubelet's value for pause containers; clamped where impossible


def bundle_dir(pod: Sandbox) -> Path:
    return Path(pod.meta.run_dir) / "infra"


async def create_and_start(rt: Runtime, pod: Sandbox, plan: PodPlan) -> int:
    meta = pod.meta
    bundle = bundle_dir(pod)
    image_args = await _image_rootfs_args(rt) if rt.config.image.pause_image else None
    privileged = pod.config.linux.security_context.privileged
    spec = ocispec.infra_spec(
        hostname=meta.hostname,
        netns_path=Path(meta.netns_path) if meta.netns_path else None,
        host_ipc=plan.host_ipc,
        host_pid=plan.host_pid,
        host_uts=plan.host_network,
        share_pid=plan.share_pid,
        shm_path=Path(meta.shm_path) if meta.shm_path else None,
        pause_binary=None if image_args else Path(rt.config.runtime.pause_binary),
        args=image_args,
        cgroups_path=rt.cgroups.container_cgroup(meta.cgroup_parent, meta.infra_id),
        sysctls=plan.sysctls,
        oom_score_adj=clamp_oom_score_adj(INFRA_OOM_SCORE_ADJ),
        privileged=privileged,
        annotations={**rt.handlers.of(meta.handler).pod_annotations(pod.config.annotations),
                     "io.kubernetes.cri.sandbox-id": meta.id,
                     "io.kubernetes.cri.container-type": "sandbox"},
    )

    def write_bundle() -> None:
        # The pause process runs under the runtime default like the pod's containers (CRI-O
        # and containerd leave it unconfined). It needs nothing the profile denies, and a
        # container's `ps` may read /proc/1/... of it (ptrace read) only when both run under
        # the same profile: an unconfined pid 1 shows up as AppArmor denials.
        profile = apparmor_profile.resolve(rt.apparmor, RUNTIME_DEFAULT, privileged=privileged)
        if profile is not None:
            spec["process"]["apparmorProfile"] = profile
        ocispec.write_bundle(bundle, spec)

    await asyncio.to_thread(write_bundle)
    if image_args:
        # A writable overlay: runc creates the mount points (/proc, /dev, ...) the image lacks,
        # then makes the root read-only as the spec says.
        await mount_rootfs(rt.images.store, _pause_record(rt).chain_ids, bundle / "rootfs",
                           upper=bundle / "upper")
    timeout = rt.config.runtime.runtime_timeout
    oci = rt.oci(meta.handler)
    try:
        pid = await oci.create(
            meta.infra_id,
            bundle,
            log_path=bundle / "infra.log",
            pidfile=bundle / "pid",
            attach_socket_dir=bundle,
            pod_cgroup=meta.cgroup_parent,
            timeout=timeout,
        )
        await oci.start(meta.infra_id)
    except OCITimeout as exc:
        raise DeadlineExceeded(f"pod sandbox infra container did not start: {exc}") from exc
    except OCIRuntimeError as exc:
        raise Internal(f"pod sandbox infra container failed: {exc}") from exc
    return pid


def _pause_record(rt: Runtime) -> ImageRecord:
    rec = rt.images.resolve(rt.config.image.pause_image)
    if rec is None:
        raise FailedPrecondition(f"pause image {rt.config.image.pause_image} is not in the store")
    return rec


async def _image_rootfs_args(rt: Runtime) -> list[str]:
    """The pause image's command; pulled (anonymously) the first time it is needed."""
    if rt.images.resolve(rt.config.image.pause_image) is None:
        await rt.images.pull(rt.config.image.pause_image, Credentials())
    cfg = parse_image_config(rt.images.store.get_blob(_pause_record(rt).config_digest))
    args = [*cfg.entrypoint, *cfg.cmd]
    if not args:
        raise FailedPrecondition(f"pause image {rt.config.image.pause_image} has no command")
    return args


async def stop(rt: Runtime, pod: Sandbox) -> None:
    """SIGKILL the infra and wait for conmon to record the exit (no polling: the exit watcher
    resolves the waiter). Already-dead and unknown infras are fine."""
    ident, oci = pod.meta.infra_id, rt.oci(pod.meta.handler)
    exited = rt.exit_waiter(ident)
    if not exited.done() and not oci.monitor_alive(ident):
        # conmon died (killed with a daemon that was killed mid-create): no exit file will
        # come, so the process itself is watched.
        rt.drop_exit_waiter(ident)
        try:
            await oci.kill_unmonitored(ident, rt.config.runtime.runtime_timeout)
        except OCITimeout as exc:
            raise DeadlineExceeded(f"infra of pod sandbox {ident} did not exit: {exc}") from exc
        except OCIRuntimeError as exc:
            raise Internal(f"cannot stop pod sandbox infra {ident}: {exc}") from exc
        return
    if not exited.done():
        try:
            await oci.kill(ident, signal.SIGKILL)
        except (OCINotFound, OCINotRunning):
            # Gone already: never created, or it stopped between the checks.
            rt.drop_exit_waiter(ident)
            return
        except OCIRuntimeError as exc:
            raise Internal(f"cannot stop pod sandbox infra {ident}: {exc}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(exited), rt.config.runtime.runtime_timeout)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"infra of pod sandbox {ident} did not exit after SIGKILL") from exc


async def destroy(rt: Runtime, pod: Sandbox) -> None:
    """Stop and delete the infra container and its exit record; idempotent."""
    await stop(rt, pod)
    oci = rt.oci(pod.meta.handler)
    try:
        await oci.delete(pod.meta.infra_id, force=True)
    except OCIRuntimeError as exc:
        raise Internal(f"cannot delete pod sandbox infra {pod.meta.infra_id}: {exc}") from exc
    await asyncio.to_thread(unmount, bundle_dir(pod) / "rootfs")  # a pause image's rootfs
    with contextlib.suppress(FileNotFoundError):
        (rt.exits_dir / pod.meta.infra_id).unlink()
    rt.exits.forget(pod.meta.infra_id)
    await asyncio.to_thread(shutil.rmtree, oci.persist_dir(pod.meta.infra_id), True)
