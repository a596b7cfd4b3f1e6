"""ContainerStatus: answered from memory; verbose adds a JSON "info" map (pid, spec, sandbox)."""

from __future__ import annotations

import json
import logging

from cri.api import api_pb2
from cri.image.reference import image_id
from cri.runtime.daemon import Runtime
from cri.store.container import STATE_VALUES, Container
from sandbox.oci.signals import signal_name

log = logging.getLogger(__name__)


def shown_image(ctr: Container) -> str:
    """The image as statuses and metrics show it: by name, as containerd and CRI-O report it,
    also when the client created the container by image id (the kubelet does: without this
    every container's "Image:" was a sha256 id)."""
    if image_id(ctr.meta.image) is not None and ctr.meta.image_name:
        return ctr.meta.image_name
    return ctr.meta.image


def image_spec(ctr: Container) -> api_pb2.ImageSpec:
    img = ctr.config.image
    return api_pb2.ImageSpec(image=shown_image(ctr), annotations=img.annotations,
                             user_specified_image=img.user_specified_image or ctr.meta.image,
                             runtime_handler=img.runtime_handler)


def _mounts(ctr: Container) -> list[api_pb2.Mount]:
    out = []
    for m in ctr.config.mounts:
        copy = api_pb2.Mount()
        copy.CopyFrom(m)
        if m.HasField("image") and m.image.image:
            # Report which image the volume really came from (its id), as the kubelet shows it.
            copy.image.image_ref = ctr.meta.image_mounts.get(m.container_path, "")
        out.append(copy)
    return out


def _resources(ctr: Container) -> api_pb2.ContainerResources:
    res = api_pb2.LinuxContainerResources()
    if ctr.status.resources:
        res.ParseFromString(ctr.status.resources)
    else:
        res.CopyFrom(ctr.config.linux.resources)
    return api_pb2.ContainerResources(linux=res)


def status_message(rt: Runtime, ctr: Container) -> api_pb2.ContainerStatus:
    meta, st = ctr.meta, ctr.status
    return api_pb2.ContainerStatus(
        id=ctr.id,
        metadata=ctr.config.metadata,
        state=STATE_VALUES[st.state],
        created_at=meta.created_at,
        started_at=st.started_at,
        finished_at=st.finished_at,
        exit_code=st.exit_code,
        image=image_spec(ctr),
        image_ref=meta.image_ref,
        image_id=meta.image_id,
        reason=st.reason,
        message=st.message,
        labels=ctr.config.labels,
        annotations=ctr.config.annotations,
        mounts=_mounts(ctr),
        log_path=meta.log_path,
        resources=_resources(ctr),
        user=api_pb2.ContainerUser(linux=api_pb2.LinuxContainerUser(
            uid=meta.uid, gid=meta.gid, supplemental_groups=[meta.gid, *meta.additional_gids])),
        stop_signal=effective_stop_signal(ctr),
    )


def effective_stop_signal(ctr: Container) -> api_pb2.Signal.ValueType:
    """The signal StopContainer sends (the CRI's, else the image's, else SIGTERM), as the
    kubelet shows it (KEP-4960)."""
    if ctr.config.stop_signal:
        return ctr.config.stop_signal
    name = signal_name(ctr.meta.stop_signal).replace("+", "PLUS").replace("-", "MINUS")
    try:
        return api_pb2.Signal.Value(name)
    except ValueError:
        return api_pb2.Signal.RUNTIME_DEFAULT


def container_status(rt: Runtime, ctr_id: str, verbose: bool) -> api_pb2.ContainerStatusResponse:
    ctr = rt.containers.lookup(ctr_id)
    resp = api_pb2.ContainerStatusResponse(status=status_message(rt, ctr))
    if verbose:
        resp.info["info"] = json.dumps(info(ctr))
    return resp


def info(ctr: Container) -> dict[str, object]:
    try:
        spec = json.loads((ctr.bundle / "config.json").read_bytes())
    except (OSError, ValueError):
        spec = None
    return {
        "sandboxID": ctr.meta.pod_id,
        "pid": ctr.status.pid,
        "runtimeSpec": spec,
        "bundle": str(ctr.bundle),
        "cgroupsPath": ctr.meta.cgroup_path,
        "pidNamespace": ctr.meta.pid_namespace,
    }
