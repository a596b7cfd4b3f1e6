"""The daemon's pod and container records, read without the daemon and without changing them.

The stores' own ``load`` is the daemon's start-up: it removes what a crash left half made. An
inspection must not, so this reads the same files (see cri/store) and skips what it cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from cri.api import api_pb2


class InspectError(Exception):
    """An inspection that cannot be answered (unknown or ambiguous id): exit status 1."""


@dataclass(frozen=True)
class PodRecord:
    id: str
    namespace: str
    name: str
    state: str  # "ready" / "notready" as the daemon last recorded it
    pid: int  # the infra process, 0 when never started
    ips: list[str]
    netns_path: str  # "" for host network
    cgroup_parent: str
    infra_id: str
    handler: str


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    pod_id: str
    state: str  # created / running / exited / unknown as last recorded
    pid: int
    cgroup_path: str  # the OCI linux.cgroupsPath the container was created with
    pid_namespace: str  # container / pod / node / target
    handler: str


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


R = TypeVar("R")
# A record from a dir's meta.json, status.json and config.pb (raising what a bad file raises).
Maker = Callable[[dict[str, Any], dict[str, Any], bytes], R]


def _load(top: Path, make: Maker[R]) -> dict[str, R]:
    """The records of every committed dir under ``top``, by id. A dir with no status.json (the
    daemon's commit marker) is a creation that never finished, or a removal under way; one with
    a file that does not parse is skipped the same way."""
    out: dict[str, R] = {}
    for d in sorted(top.iterdir()) if top.is_dir() else []:
        meta = _read_json(d / "meta.json")
        status = _read_json(d / "status.json")
        if meta is None or status is None:
            continue
        try:
            out[str(meta["id"])] = make(meta, status, (d / "config.pb").read_bytes())
        except (OSError, DecodeError, KeyError, TypeError, ValueError):
            continue
    return out


def _pod(meta: dict[str, Any], status: dict[str, Any], config: bytes) -> PodRecord:
    md = api_pb2.PodSandboxConfig.FromString(config).metadata
    return PodRecord(
        id=meta["id"], namespace=md.namespace, name=md.name,
        state=str(status.get("state", "")), pid=int(status.get("pid", 0)),
        ips=[str(ip) for ip in status.get("ips", [])],
        netns_path=str(meta.get("netns_path", "")),
        cgroup_parent=str(meta.get("cgroup_parent", "")),
        infra_id=str(meta.get("infra_id", "")), handler=str(meta.get("handler", "runc")))


def _container(meta: dict[str, Any], status: dict[str, Any], config: bytes) -> ContainerRecord:
    # The name the client gave (meta.json holds the k8s_..._attempt one).
    md = api_pb2.ContainerConfig.FromString(config).metadata
    return ContainerRecord(
        id=meta["id"], name=md.name or str(meta["name"]), pod_id=str(meta["pod_id"]),
        state=str(status.get("state", "")), pid=int(status.get("pid", 0)),
        cgroup_path=str(meta.get("cgroup_path", "")),
        pid_namespace=str(meta.get("pid_namespace", "")),
        handler=str(meta.get("handler", "runc")))


def load_pods(root: Path) -> dict[str, PodRecord]:
    return _load(root / "sandboxes", _pod)


def load_containers(root: Path) -> dict[str, ContainerRecord]:
    return _load(root / "containers", _container)


@dataclass(frozen=True)
class Target:
    """What the user named: a pod, or a container (with its pod)."""

    pod: PodRecord
    container: ContainerRecord | None
    containers: list[ContainerRecord]  # every container of the pod, by name


def resolve(query: str, pods: dict[str, PodRecord], ctrs: dict[str, ContainerRecord]) -> Target:
    """A pod or container by full id, unique id prefix, or a pod by ``NAMESPACE/NAME``.

    A prefix matching both a pod and a container is ambiguous like any other. Raises
    InspectError naming the candidates."""
    if not query:
        raise InspectError("no pod or container named")
    if "/" in query:
        namespace, _, name = query.partition("/")
        named = [p for p in pods.values() if p.namespace == namespace and p.name == name]
        # Attempts of one pod (a re-created sandbox) share the name until the old one is removed.
        if len(named) == 1:
            return _target(named[0], None, ctrs)
        if not named:
            raise InspectError(f"no pod named {query!r}")
        raise InspectError(_ambiguous(query, [f"pod {p.id} ({p.state})" for p in named]))
    exact_pod, exact_ctr = pods.get(query), ctrs.get(query)
    if exact_pod is not None:
        return _target(exact_pod, None, ctrs)
    if exact_ctr is not None:
        return _container_target(exact_ctr, pods, ctrs)
    pod_ids = sorted(i for i in pods if i.startswith(query))
    ctr_ids = sorted(i for i in ctrs if i.startswith(query))
    if len(pod_ids) + len(ctr_ids) > 1:
        raise InspectError(_ambiguous(query, [f"pod {i} ({pods[i].namespace}/{pods[i].name})"
                                              for i in pod_ids]
                                      + [f"container {i} ({ctrs[i].name})" for i in ctr_ids]))
    if pod_ids:
        return _target(pods[pod_ids[0]], None, ctrs)
    if ctr_ids:
        return _container_target(ctrs[ctr_ids[0]], pods, ctrs)
    raise InspectError(f"no pod or container {query!r}")


def _ambiguous(query: str, candidates: list[str]) -> str:
    return f"{query!r} is ambiguous; it matches:\n" + "\n".join(f"  {c}" for c in candidates)


def _target(pod: PodRecord, ctr: ContainerRecord | None, ctrs: dict[str, ContainerRecord]
            ) -> Target:
    mine = sorted((c for c in ctrs.values() if c.pod_id == pod.id), key=lambda c: (c.name, c.id))
    return Target(pod, ctr, mine)


def _container_target(ctr: ContainerRecord, pods: dict[str, PodRecord],
                      ctrs: dict[str, ContainerRecord]) -> Target:
    pod = pods.get(ctr.pod_id)
    if pod is None:
        raise InspectError(f"container {ctr.id}: its pod {ctr.pod_id} has no readable state")
    return _target(pod, ctr, ctrs)
