"""CreateContainer: reserve the name, then build the container step by step, each step
registering its undo first (the same discipline as RunPodSandbox).

Order: checks (CDI devices resolved among them) -> state dir -> image layers pinned -> rootfs
overlay (writable upper) -> image volumes -> user resolved inside the rootfs -> spec (CDI edits
last) -> NRI CreateContainer (adjustments) -> OCI hooks -> bundle -> conmon + `runc create` ->
CREATED -> NRI PostCreateContainer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cri.api import api_pb2
from cri.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound
from cri.image.images import name_of
from cri.image.manifest import ImageConfig, parse_image_config
from cri.image.rootfs import mount_rootfs, unmount
from cri.image.store import ImageRecord
from cri.nri import views
from cri.nri.api import api_pb2 as nri
from cri.runtime import apparmor_profile, cdi_devices, container_spec, nri_events, oci_hooks
from cri.runtime.container_exit import publish
from cri.runtime.daemon import Runtime
from cri.runtime.podspec import check_user_namespace
from cri.store.container import Container, ContainerMeta, ContainerState
from cri.store.sandbox import Sandbox
from sandbox.apparmor import Request
from sandbox.cdi.inject import Injection
from sandbox.oci import spec as ocispec
from sandbox.oci.errors import OCIRuntimeError, OCITimeout
from sandbox.oci.signals import DEFAULT_STOP_SIGNAL, parse_signal
from sandbox.oci.user import Identity, UserError, resolve_identity
from sandbox.securejoin import resolve_in_root

log = logging.getLogger(__name__)

NS = api_pb2.NamespaceMode


def container_name(md: api_pb2.ContainerMetadata, pod: Sandbox) -> str:
    p = pod.config.metadata
    return f"k8s_{md.name}_{p.name}_{p.namespace}_{p.uid}_{md.attempt}"


def _log_path(pod: Sandbox, config: api_pb2.ContainerConfig, ctr_dir: Path) -> Path:
    rel = config.log_path
    if not pod.config.log_directory or not rel:
        return ctr_dir / "container.log"  # still kept, so `crictl logs` works
    if rel.startswith("/") or ".." in rel.split("/"):
        raise InvalidArgument(f"log path {rel!r} must be relative to the pod's log directory")
    return Path(pod.config.log_directory) / rel


def _stop_signal(config: api_pb2.ContainerConfig, image: ImageConfig) -> int:
    if config.stop_signal:
        name = api_pb2.Signal.Name(config.stop_signal)
        return parse_signal(name)
    if image.stop_signal:
        try:
            return parse_signal(image.stop_signal)
        except ValueError:
            log.warning("image stop signal %r is not a signal; using SIGTERM", image.stop_signal)
    return DEFAULT_STOP_SIGNAL


def _pid_namespace(rt: Runtime, pod: Sandbox, config: api_pb2.ContainerConfig
                   ) -> tuple[str, str | None, bool]:
    """(mode name, namespace path to join or None, host pid)."""
    ns = config.linux.security_context.namespace_options
    if ns.pid == NS.NODE:
        return "node", None, True
    if ns.pid == NS.POD:
        return "pod", f"/proc/{pod.status.pid}/ns/pid", False
    if ns.pid == NS.TARGET:
        try:
            target = rt.containers.lookup(ns.target_id)
        except NotFound as exc:
            raise NotFound(f"pid namespace target container {ns.target_id!r} not found") from exc
        if target.meta.pod_id != pod.id:
            raise InvalidArgument("pid namespace target must be a container of the same pod")
        if not target.running or not target.status.pid:
            raise FailedPrecondition(f"pid namespace target {target.id} is not running")
        return "target", f"/proc/{target.status.pid}/ns/pid", False
    return "container", None, False


def _resolve_image(rt: Runtime, spec: api_pb2.ImageSpec) -> ImageRecord:
    name = spec.image
    if not name:
        raise InvalidArgument("CreateContainer needs an image")
    rec = rt.images.resolve(name)
    if rec is None:
        raise NotFound(f"image {name!r} not found: pull it first")
    return rec


async def create_container(rt: Runtime, pod_id: str, config: api_pb2.ContainerConfig,
                           pod_config: api_pb2.PodSandboxConfig | None = None) -> str:
    if not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgument("container metadata.name must be set")
    check_user_namespace(config.linux.security_context.namespace_options)
    apparmor = apparmor_profile.requested(config.linux.security_context)
    pod = rt.sandboxes.lookup(pod_id)
    rec = _resolve_image(rt, config.image)
    image_cfg = parse_image_config(rt.images.store.get_blob(rec.config_digest))
    stop_signal = _stop_signal(config, image_cfg)
    # CDI devices are resolved first: one that cannot be given refuses the request before
    # the name is taken or anything is made.
    handler = rt.handlers.of(pod.meta.handler)
    cdi = await asyncio.to_thread(cdi_devices.resolve, rt.cdi, cdi_devices.requested(
        config, handler.pod_annotations(pod.config.annotations)))
    ctr_id = secrets.token_hex(32)
    name = container_name(config.metadata, pod)
    rt.containers.names.reserve(name, ctr_id)
    try:
        async with rt.lock(pod.id):
            if rt.sandboxes.get(pod.id) is not pod:
                raise NotFound(f"pod sandbox {pod_id} was removed")
            if not pod.ready:
                raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
            task = rt.spawn(_create(rt, pod, ctr_id, name, config, rec, image_cfg, stop_signal,
                                    apparmor, cdi))
            return await asyncio.shield(task)
    except BaseException:
        if rt.containers.get(ctr_id) is None:
            rt.containers.names.release(name)
        raise


async def _mount_image_volumes(rt: Runtime, ctr: Container, config: api_pb2.ContainerConfig,
                               undo: contextlib.AsyncExitStack
                               ) -> tuple[dict[str, Path], dict[str, str]]:
    """Each image volume mounted read-only: container path -> what to bind, and container
    path -> the id of the image mounted there (recorded in meta, reported in ContainerStatus)."""
    out: dict[str, Path] = {}
    ids: dict[str, str] = {}
    for i, m in enumerate(config.mounts):
        if not (m.HasField("image") and m.image.image):
            continue
        rec = rt.images.resolve(m.image.image)
        if rec is None:
            raise NotFound(f"image volume {m.image.image!r} at {m.container_path} is not pulled")
        target = ctr.dir / "image-volumes" / str(i)
        rt.images.store.pin(rec.chain_ids)
        undo.callback(rt.images.store.unpin, rec.chain_ids)
        await mount_rootfs(rt.images.store, rec.chain_ids, target)
        undo.push_async_callback(asyncio.to_thread, unmount, target)
        source = target
        if m.image_sub_path:
            sub = resolve_in_root(target, m.image_sub_path)
            if not sub.exists():
                raise InvalidArgument(f"image volume {m.image.image}: sub path "
                                      f"{m.image_sub_path!r} does not exist in the image")
            source = sub
        out[m.container_path] = source
        ids[m.container_path] = rec.id
    return out, ids


async def _create(rt: Runtime, pod: Sandbox, ctr_id: str, name: str,
                  config: api_pb2.ContainerConfig, rec: ImageRecord, image_cfg: ImageConfig,
                  stop_signal: int, apparmor: Request, cdi: Injection | None) -> str:
    sc = config.linux.security_context
    pid_mode, pid_ns_path, host_pid = _pid_namespace(rt, pod, config)
    cgroup_path = rt.cgroups.container_cgroup(pod.meta.cgroup_parent, ctr_id)
    image_ref = rec.repo_digests[0] if rec.repo_digests else rec.id
    ctr_dir = rt.containers.dir / ctr_id
    log_path = _log_path(pod, config, ctr_dir)
    async with contextlib.AsyncExitStack() as undo:
        # The user is only known once the rootfs is mounted; meta is written with a
        # placeholder identity first, so recovery can tear a half-made container down.
        ident = Identity(uid=0, gid=0, additional_gids=(), username="", home="/")
        ctr = rt.containers.new(_meta(ctr_id, name, pod, config, rec, image_ref, log_path,
                                      cgroup_path, stop_signal, ident, pid_mode, {}), config)
        await asyncio.to_thread(rt.containers.begin, ctr)
        undo.callback(rt.containers.discard, ctr_id)
        # The record reaches the disk while the rootfs is mounted and runc runs.
        synced = asyncio.ensure_future(asyncio.to_thread(rt.containers.sync_begin, ctr))
        undo.push_async_callback(_settle, synced)
        rt.images.store.pin(rec.chain_ids)
        undo.callback(rt.images.store.unpin, rec.chain_ids)
        await mount_rootfs(rt.images.store, rec.chain_ids, ctr.rootfs, upper=ctr.upper)
        undo.push_async_callback(asyncio.to_thread, unmount, ctr.rootfs)
        image_mounts, image_mount_ids = await _mount_image_volumes(rt, ctr, config, undo)
        user = _UserRequest(
            image_user=image_cfg.user,
            run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
            run_as_username=sc.run_as_username or None,
            run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
            supplemental_groups=list(sc.supplemental_groups),
            strict_groups=sc.supplemental_groups_policy == api_pb2.SupplementalGroupsPolicy.Strict,
        )

        def build_spec() -> tuple[Identity, ocispec.Spec]:
            """The user from the rootfs, and the spec (in a worker thread: both read files)."""
            try:
                ident = resolve_identity(ctr.rootfs, **user.__dict__)
            except UserError as exc:
                raise InvalidArgument(str(exc)) from exc
            profile = apparmor_profile.resolve(rt.apparmor, apparmor, privileged=sc.privileged)
            handler = rt.handlers.of(pod.meta.handler)
            return ident, container_spec.container_spec(container_spec.SpecInputs(
                ctr_id=ctr_id, pod=pod, config=config, image=image_cfg, identity=ident,
                rootfs=ctr.rootfs, cgroup_path=cgroup_path, pid_ns_path=pid_ns_path,
                host_pid=host_pid, image_mounts=image_mounts,
                cgroup_features=rt.container_features(pod.meta.cgroup_parent),
                rro_supported=handler.rro_supported, pids_limit=rt.config.runtime.pids_limit,
                apparmor_profile=profile,
                host_devices=not handler.config.privileged_without_host_devices,
                pod_annotations=handler.pod_annotations(pod.config.annotations), cdi=cdi,
            ))

        ident, spec = await asyncio.to_thread(build_spec)

        def write_bundle() -> Container:
            """The missing host paths of bind mounts (every check of the request has passed by
            now), the working dir, OCI hooks (on the spec NRI plugins adjusted), meta.json, the
            bundle and the log dir."""
            for path in container_spec.missing_host_paths(config.mounts):
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                log.info("container %s: created the missing host path %s of a mount", name, path)
            _make_workdir(ctr.rootfs, spec["process"]["cwd"])
            oci_hooks.add_hooks(rt.oci_hooks, spec, pod.config.annotations, config.mounts, name)
            done = rt.containers.new(_meta(ctr_id, name, pod, config, rec, image_ref, log_path,
                                           cgroup_path, stop_signal, ident, pid_mode,
                                           image_mount_ids), config)
            rt.containers.update_meta(done)
            ocispec.write_bundle(done.bundle, spec)
            log_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            return done

        # NRI plugins adjust the spec before runc sees it. Until the container is in the store
        # it is not listed, and a plugin joining meanwhile waits (cri/nri/gate.py). A failure
        # from here on is reported to plugins as the container stopping and going.
        info = views.ContainerInfo(
            id=ctr_id, pod_id=pod.id, name=config.metadata.name, state=nri.CONTAINER_UNKNOWN,
            labels=dict(config.labels), image=config.image.image, image_id=rec.id,
            created_at=ctr.meta.created_at)
        async with rt.nri.gate.shared():
            undo.push_async_callback(nri_events.undo_create_container, rt, pod, info, spec)
            updates = await nri_events.create_container(rt, pod, info, spec)
            ctr = await asyncio.to_thread(write_bundle)
            undo.push_async_callback(_delete_runc, rt, ctr)
            try:
                pid = await rt.oci(pod.meta.handler).create(
                    ctr_id, ctr.bundle, log_path=log_path, pidfile=ctr.bundle / "pid",
                    attach_socket_dir=ctr.bundle, terminal=config.tty, stdin=config.stdin,
                    stdin_once=config.stdin_once, name=name, pod_cgroup=pod.meta.cgroup_parent,
                    timeout=rt.config.runtime.runtime_timeout,
                )
            except OCITimeout as exc:
                raise DeadlineExceeded(f"container create timed out: {exc}") from exc
            except OCIRuntimeError as exc:
                raise Internal(f"container create failed: {exc}") from exc
            await synced
            ctr.status.pid = pid
            ctr.set_state(ContainerState.CREATED)
            rt.containers.commit(ctr)
            undo.pop_all()
    log.info("container %s (%s) created in pod %s%s", ctr_id, name, pod.id,
             f" with CDI devices {', '.join(cdi.names)}" if cdi else "")
    publish(rt, ctr, api_pb2.ContainerEventType.CONTAINER_CREATED_EVENT)
    await nri_events.post_create_container(rt, pod, ctr, updates)
    return ctr_id


@dataclass(frozen=True)
class _UserRequest:
    image_user: str
    run_as_user: int | None
    run_as_username: str | None
    run_as_group: int | None
    supplemental_groups: list[int]
    strict_groups: bool


def _meta(ctr_id: str, name: str, pod: Sandbox, config: api_pb2.ContainerConfig,
          rec: ImageRecord, image_ref: str, log_path: Path, cgroup_path: str, stop_signal: int,
          ident: Identity, pid_mode: str, image_mounts: dict[str, str]) -> ContainerMeta:
    return ContainerMeta(
        id=ctr_id, name=name, pod_id=pod.id, created_at=time.time_ns(),
        image=config.image.image, image_id=rec.id, image_ref=image_ref,
        chain_ids=list(rec.chain_ids), log_path=str(log_path), cgroup_path=cgroup_path,
        stop_signal=stop_signal, uid=ident.uid, gid=ident.gid,
        additional_gids=list(ident.additional_gids), username=ident.username,
        pid_namespace=pid_mode, image_mounts=image_mounts,
        image_name=name_of(rec, config.image.user_specified_image, config.image.image),
        handler=pod.meta.handler,
    )


async def _settle(task: asyncio.Future[None]) -> None:
    """Let a rolled-back creation's fsync thread finish before its files go."""
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.debug("syncing a rolled-back container record: %s", task.exception())


async def _delete_runc(rt: Runtime, ctr: Container) -> None:
    ctr_id, oci = ctr.id, rt.oci(ctr.meta.handler)
    try:
        await oci.delete(ctr_id, force=True)
    except OCIRuntimeError as exc:
        log.warning("cleaning up runc state of %s: %s", ctr_id, exc)
    await asyncio.to_thread(shutil.rmtree, oci.persist_dir(ctr_id), True)
    (rt.exits_dir / ctr_id).unlink(missing_ok=True)
    rt.exits.forget(ctr_id)


def _make_workdir(rootfs: Path, cwd: str) -> None:
    """Create a missing working dir inside the rootfs (never through a symlink out of it)."""
    if cwd == "/":
        return
    target = resolve_in_root(rootfs, posixpath.normpath(cwd))
    if not target.exists():
        target.mkdir(mode=0o755, parents=True)
