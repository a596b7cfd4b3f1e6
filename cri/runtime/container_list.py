"""ListContainers / StreamContainers: from memory, with the CRI filter."""

from __future__ import annotations

from cri.api import api_pb2
from cri.encoded import Encoded, join, repeated_entry
from cri.runtime.container_status import image_spec
from cri.runtime.daemon import Runtime
from cri.store.container import STATE_VALUES, Container


def _matches(ctr: Container, f: api_pb2.ContainerFilter) -> bool:
    if f.id and not ctr.id.startswith(f.id):
        return False
    if f.pod_sandbox_id and not ctr.meta.pod_id.startswith(f.pod_sandbox_id):
        return False
    if f.HasField("state") and STATE_VALUES[ctr.status.state] != f.state.state:
        return False
    labels = ctr.config.labels
    return all(labels.get(k) == v for k, v in f.label_selector.items())


def _candidates(rt: Runtime, f: api_pb2.ContainerFilter | None) -> list[Container]:
    if f is not None and f.pod_sandbox_id and len(f.pod_sandbox_id) == 64:
        candidates = rt.containers.of_pod(f.pod_sandbox_id)  # the kubelet's common case
    else:
        candidates = list(rt.containers)
    return [c for c in candidates if f is None or _matches(c, f)]


def _message(c: Container) -> api_pb2.Container:
    return api_pb2.Container(
        id=c.id,
        pod_sandbox_id=c.meta.pod_id,
        metadata=c.config.metadata,
        image=image_spec(c),
        image_ref=c.meta.image_ref,
        image_id=c.meta.image_id,
        state=STATE_VALUES[c.status.state],
        created_at=c.meta.created_at,
        labels=c.config.labels,
        annotations=c.config.annotations,
    )


def list_containers(rt: Runtime, f: api_pb2.ContainerFilter | None) -> list[api_pb2.Container]:
    return [_message(c) for c in _candidates(rt, f)]


def _entry(c: Container) -> bytes:
    entry = c.list_entry
    if entry is None:
        entry = c.list_entry = repeated_entry(1, _message(c).SerializeToString())
    return entry


def list_containers_encoded(rt: Runtime, f: api_pb2.ContainerFilter | None) -> Encoded:
    """The ListContainersResponse, serialised, from each container's cached entry."""
    return join(_entry(c) for c in _candidates(rt, f))
