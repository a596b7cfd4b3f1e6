"""How plugins see a container: the NRI Container message, most of it read off the container's
OCI spec (so a plugin sees what runc is given, adjustments of earlier plugins included)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cri.nri import resources
from cri.nri.api import api_pb2 as nri

Spec = dict[str, Any]

_HOOK_KINDS = (("prestart", "prestart"), ("createRuntime", "create_runtime"),
               ("createContainer", "create_container"), ("startContainer", "start_container"),
               ("poststart", "poststart"), ("poststop", "poststop"))


@dataclass(frozen=True)
class ContainerInfo:
    """What the store knows of a container beyond its spec."""

    id: str
    pod_id: str
    name: str  # the CRI metadata name, as the kubelet named it
    state: nri.ContainerState.ValueType
    labels: dict[str, str]
    image: str = ""
    image_id: str = ""
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0


def container(spec: Spec, info: ContainerInfo) -> nri.Container:
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    out = nri.Container(
        id=info.id, pod_sandbox_id=info.pod_id, name=info.name, state=info.state,
        labels=info.labels, annotations=spec.get("annotations") or {},
        args=process.get("args") or [], env=process.get("env") or [],
        created_at=info.created_at, started_at=info.started_at, finished_at=info.finished_at,
        exit_code=info.exit_code, status_reason=info.reason, status_message=info.message,
        pid=info.pid,
    )
    out.image.name, out.image.config_digest = info.image, info.image_id
    for m in spec.get("mounts") or []:
        out.mounts.add(destination=m["destination"], type=m.get("type", ""),
                       source=m.get("source", ""), options=m.get("options") or [])
    for oci, field in _HOOK_KINDS:
        for h in (spec.get("hooks") or {}).get(oci) or []:
            hook = getattr(out.hooks, field).add(path=h["path"], args=h.get("args") or [],
                                                 env=h.get("env") or [])
            if "timeout" in h:
                hook.timeout.value = h["timeout"]
    for r in process.get("rlimits") or []:
        out.rlimits.add(type=r["type"], hard=r["hard"], soft=r["soft"])
    user = process.get("user") or {}
    out.user.uid, out.user.gid = user.get("uid", 0), user.get("gid", 0)
    out.user.additional_gids.extend(user.get("additionalGids") or [])
    lc = out.linux
    for ns in linux.get("namespaces") or []:
        lc.namespaces.add(type=ns["type"], path=ns.get("path", ""))
    for d in linux.get("devices") or []:
        dev = lc.devices.add(path=d["path"], type=d["type"], major=d.get("major", 0),
                             minor=d.get("minor", 0))
        for key, field in (("fileMode", "file_mode"), ("uid", "uid"), ("gid", "gid")):
            if key in d:
                getattr(dev, field).value = d[key]
    lc.resources.CopyFrom(resources.from_oci(linux.get("resources") or {}))
    if "oomScoreAdj" in process:
        lc.oom_score_adj.value = process["oomScoreAdj"]
    lc.cgroups_path = linux.get("cgroupsPath", "")
    return out
