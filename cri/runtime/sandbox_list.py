"""ListPodSandbox and StreamPodSandboxes: filters by id (or unique prefix), state and labels,
answered from memory."""

from __future__ import annotations

from collections.abc import Iterator

from cri.api import api_pb2
from cri.runtime.daemon import Runtime
from cri.runtime.sandbox_status import state_value
from cri.store.sandbox import Sandbox


def _matches(pod: Sandbox, f: api_pb2.PodSandboxFilter) -> bool:
    if f.HasField("state") and state_value(pod) != f.state.state:
        return False
    labels = pod.config.labels
    return all(labels.get(k) == v for k, v in f.label_selector.items())


def _select(rt: Runtime, f: api_pb2.PodSandboxFilter | None) -> Iterator[Sandbox]:
    if f is None:
        yield from rt.sandboxes
        return
    if f.id:
        # A full id or a prefix that matches exactly one pod; anything else matches nothing.
        found = rt.sandboxes.ids.matches(f.id)
        pods = [p for i in found if (p := rt.sandboxes.get(i)) is not None]
        if len(pods) > 1 and f.id not in found:
            return
        candidates: list[Sandbox] = [p for p in pods if p.id == f.id] or pods
    else:
        candidates = list(rt.sandboxes)
    yield from (p for p in candidates if _matches(p, f))


def to_message(pod: Sandbox) -> api_pb2.PodSandbox:
    cfg = pod.config
    return api_pb2.PodSandbox(
        id=pod.id,
        metadata=cfg.metadata,
        state=state_value(pod),
        created_at=pod.meta.created_at,
        labels=cfg.labels,
        annotations=cfg.annotations,
        runtime_handler=pod.meta.runtime_handler,
    )


def list_pod_sandbox(rt: Runtime, f: api_pb2.PodSandboxFilter | None) -> list[api_pb2.PodSandbox]:
    return [to_message(p) for p in _select(rt, f)]
