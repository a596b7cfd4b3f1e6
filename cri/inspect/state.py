"""The daemon's pod and container records, read without the daemon and without changing them.

The stores' own ``load`` is the daemon's start-up: it removes what a crash left half made. An
inspection must not, so this reads each dir with the stores' read-only readers (read_sandbox,
read_container) and skips what they cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cri.store.container import Container, read_container
from cri.store.durable import READ_ERRORS
from cri.store.sandbox import Sandbox, read_sandbox

T = TypeVar("T")


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


def _committed(top: Path, read: Callable[[Path], tuple[T, bool]]) -> list[T]:
    """The records of every committed dir under ``top``, read with the stores' own readers.
    A dir with no status.json (the daemon's commit marker) is a creation that never finished,
    or a removal under way; one with a file that does not parse is skipped the same way, and
    neither is touched (the daemon's start-up is what cleans them)."""
    out: list[T] = []
    for d in sorted(top.iterdir()) if top.is_dir() else []:
        try:
            record, committed = read(d)
        except READ_ERRORS:
            continue
        if committed:
            out.append(record)
    return out


def _pod(pod: Sandbox) -> PodRecord:
    md = pod.config.metadata
    return PodRecord(
        id=pod.id, namespace=md.namespace, name=md.name, state=pod.status.state.value,
        pid=pod.status.pid, ips=list(pod.status.ips), netns_path=pod.meta.netns_path,
        cgroup_parent=pod.meta.cgroup_parent, infra_id=pod.meta.infra_id,
        handler=pod.meta.handler)


def _container(ctr: Container) -> ContainerRecord:
    # The name the client gave (meta.json holds the k8s_..._attempt one).
    return ContainerRecord(
        id=ctr.id, name=ctr.config.metadata.name or ctr.meta.name, pod_id=ctr.meta.pod_id,
        state=ctr.status.state.value, pid=ctr.status.pid, cgroup_path=ctr.meta.cgroup_path,
        pid_namespace=ctr.meta.pid_namespace, handler=ctr.meta.handler)


def load_pods(root: Path) -> dict[str, PodRecord]:
    return {p.id: _pod(p) for p in _committed(root / "sandboxes", read_sandbox)}


def load_containers(root: Path) -> dict[str, ContainerRecord]:
    return {c.id: _container(c) for c in _committed(root / "containers", read_container)}


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
