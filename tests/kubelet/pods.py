"""Static pods for the kubelet suite, written with the Kubernetes object models, and polls on
what the kubelet reports about them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client import (
    V1Container,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1ResourceRequirements,
)

from cri.api import api_pb2
from tests.e2e.containers import IMAGE, wait_until
from tests.e2e.helpers import Daemon
from tests.kubelet.node import NAMESPACE, Kubelet

T = TypeVar("T")
WAIT = 90.0  # a bound on every poll, never a figure: the 2 cores are shared and busy


def container(name: str, command: list[str], image: str = IMAGE, **kw: Any) -> V1Container:
    return V1Container(name=name, image=image, image_pull_policy="IfNotPresent",
                       command=command, **kw)


def pod(name: str, *containers: V1Container, **spec: Any) -> V1Pod:
    """A pod in the suite's namespace with a uid of its own (so its cgroup, log dir and CRI
    metadata are known in advance) and a short grace period (``sleep`` ignores SIGTERM)."""
    spec.setdefault("termination_grace_period_seconds", 1)
    return V1Pod(api_version="v1", kind="Pod",
                 metadata=V1ObjectMeta(name=name, namespace=NAMESPACE, uid=str(uuid.uuid4())),
                 spec=V1PodSpec(containers=list(containers), **spec))


def memory_hog() -> V1Pod:
    """A pod whose container outgrows its 32 MiB limit: busybox tail keeps what it reads
    until a newline, and /dev/zero has none."""
    limits = {"memory": "32Mi"}
    return pod("oom", container("hog", ["tail", "/dev/zero"],
                                resources=V1ResourceRequirements(limits=limits, requests=limits)))


def oom_killed(p: V1Pod) -> bool:
    """The memory hog was OOM-killed and started again."""
    st = ctr_status(p, "hog")
    return bool(st is not None and st.restart_count >= 1 and st.last_state.terminated
                is not None and st.last_state.terminated.reason == "OOMKilled"
                and st.last_state.terminated.exit_code == 137)


def poll(what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
    """``check()`` until it returns something truthy, which is returned (the e2e tests' wait,
    with the suite's bound)."""
    return wait_until(what, check, timeout)


def wait_pod(kubelet: Kubelet, name: str, what: str, check: Callable[[V1Pod], object],
             timeout: float = WAIT) -> V1Pod:
    """The pod as the kubelet reports it, once ``check`` holds for it."""
    last: list[V1Pod | None] = [None]

    def once() -> V1Pod | None:
        p = last[0] = kubelet.pod(name)
        return p if p is not None and p.status is not None and check(p) else None

    try:
        return poll(f"pod {name}: {what}", once, timeout)
    except AssertionError as exc:
        status = last[0].status if last[0] is not None else "not listed"
        raise AssertionError(f"{exc}\nlast status: {status}\nkubelet log:\n"
                             f"{kubelet.log_tail(25)}") from None


def wait_log(kubelet: Kubelet, pod_name: str, ctr: str, text: str, **params: object) -> str:
    """The container's log through the kubelet's server, once it contains ``text``."""
    def once() -> str | None:
        log = kubelet.container_logs(pod_name, ctr, **params)
        return log if text in log else None

    return poll(f"{text!r} in the log of {pod_name}/{ctr}", once)


def ctr_status(p: V1Pod, name: str, init: bool = False) -> V1ContainerStatus | None:
    statuses = (p.status.init_container_statuses if init else p.status.container_statuses) or []
    return next((s for s in statuses if s.name == name), None)


def running(p: V1Pod, name: str) -> bool:
    st = ctr_status(p, name)
    return bool(st is not None and st.state is not None and st.state.running is not None)


def ready(p: V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])


def cri_containers(daemon: Daemon, pod_uid: str, name: str | None = None
                   ) -> list[api_pb2.Container]:
    """The pod's containers as pycri lists them (every attempt, oldest first)."""
    labels = {"io.kubernetes.pod.uid": pod_uid}
    if name is not None:
        labels["io.kubernetes.container.name"] = name
    req = api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(label_selector=labels))
    found = daemon.runtime().ListContainers(req, timeout=10).containers
    return sorted(found, key=lambda c: (c.metadata.attempt, c.created_at))


def cri_sandboxes(daemon: Daemon, pod_uid: str) -> list[api_pb2.PodSandbox]:
    req = api_pb2.ListPodSandboxRequest(filter=api_pb2.PodSandboxFilter(
        label_selector={"io.kubernetes.pod.uid": pod_uid}))
    return list(daemon.runtime().ListPodSandbox(req, timeout=10).items)


def pod_ip(daemon: Daemon, sandbox_id: str) -> str:
    st = daemon.runtime().PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=10).status
    return str(st.network.ip)
