"""One pycri daemon and one kubelet for the whole kubelet suite; a test that needs another
kubelet configuration (feature gates, GC thresholds) restarts it with ``kubelet.ensure``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes.client import V1Pod

from cri.api import api_pb2
from tests.e2e.containers import remove_all_images, start_registry
from tests.e2e.helpers import (
    Daemon,
    close_connections,
    need_root,
    session_leftovers,
)
from tests.fixtures.registry import LocalRegistry
from tests.kubelet.node import NAMESPACE, NODE, Kubelet, all_hierarchies, kubelet_binary
from tests.kubelet.pods import WAIT, cri_containers, poll

CONTAINER_LOG_LINKS = Path("/var/log/containers")  # fixed in the kubelet, not configurable
NETNS_DIR = Path("/var/run/netns")


@dataclass
class Node:
    daemon: Daemon
    kubelet: Kubelet
    registry: LocalRegistry
    # Every pod sandbox the suite's pods had, noted before their removal: their network
    # namespaces must be gone at the end (other test runs on the machine have their own).
    sandboxes: set[str] = field(default_factory=set)

    def note_sandboxes(self) -> None:
        listed = self.daemon.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10)
        self.sandboxes |= {s.id for s in listed.items}

    def netns_left(self) -> list[str]:
        return sorted(n for n in (f"pycri-{i[:16]}" for i in self.sandboxes)
                      if (NETNS_DIR / n).exists())


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    need_root()
    kubelet_binary()
    daemon = Daemon.new(kind="kubelet", log_level="info")
    registry, _ = start_registry(daemon)
    kubelet: Kubelet | None = None
    try:
        daemon.start()
        kubelet = Kubelet(daemon, daemon.base / "kubelet")
        kubelet.start()
        node = Node(daemon, kubelet, registry)
        yield node
        node.note_sandboxes()
        for name in kubelet.manifest_names():
            kubelet.remove(name)
        poll("the kubelet to stop every pod", lambda: not kubelet.pods()
             and not any(c.state == api_pb2.ContainerState.CONTAINER_RUNNING
                         for c in daemon.runtime().ListContainers(
                             api_pb2.ListContainersRequest(), timeout=10).containers))
        kubelet.stop()
        kubelet.unmount_root()
        # What the kubelet's container GC (once a minute) had not removed yet goes through pycri.
        daemon.remove_all_pods()
        remove_all_images(daemon)
        left = session_leftovers(daemon)
        if node.netns_left():
            left.append(f"network namespaces {node.netns_left()}")
        left += kubelet_cgroup_leftovers(kubelet)
        # iptables is the host's, shared with any other kubelet or kube-proxy on the machine:
        # what is checked is that this kubelet never set up its chains there.
        if "Initialized iptables rules" in kubelet.log.read_text(errors="replace"):
            left.append("the kubelet's iptables chains (KUBE-FIREWALL, KUBE-IPTABLES-HINT...)")
        assert not left, f"left behind after the kubelet suite: {left}"
    finally:
        if kubelet is not None:
            kubelet.stop()
            daemon.remove_all_pods()  # first: the kubelet's cgroups go only once they are empty
            kubelet.cleanup()
        for link in CONTAINER_LOG_LINKS.glob(f"*_{NAMESPACE}_*.log"):
            link.unlink(missing_ok=True)
        registry.stop()
        keep_logs(daemon, kubelet)
        daemon.cleanup()


def keep_logs(daemon: Daemon, kubelet: Kubelet | None) -> None:
    """PYCRI_KUBELET_LOGS=DIR keeps the kubelet's and pycri's logs of the session there."""
    dest = os.environ.get("PYCRI_KUBELET_LOGS")
    if not dest:
        return
    Path(dest).mkdir(parents=True, exist_ok=True)
    shutil.copy(daemon.log, Path(dest) / "pycri.log")
    if kubelet is not None and kubelet.log.exists():
        shutil.copy(kubelet.log, Path(dest) / "kubelet.log")


def kubelet_cgroup_leftovers(kubelet: Kubelet) -> list[str]:
    """Processes in the kubelet's cgroup tree, or container cgroups pycri made under its pods
    (the pod cgroups themselves are the kubelet's; it removes them while it runs)."""
    left = []
    for hier in all_hierarchies():
        root = hier / kubelet.cgroup_root.lstrip("/")
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            if procs.read_text().strip():
                left.append(f"processes in {procs.parent}")
        for pod_dir in root.rglob("pod*"):
            inner = [p.name for p in pod_dir.iterdir() if p.is_dir()] if pod_dir.is_dir() else []
            if inner:
                left.append(f"cgroups {inner} under {pod_dir}")
    return left


@pytest.fixture
def kubelet(node: Node) -> Kubelet:
    """The shared kubelet with the base configuration (restarted if a test changed it)."""
    node.kubelet.ensure()
    return node.kubelet


@dataclass
class StaticPods:
    """The static pods one test adds; removed when it ends, and waited for until the kubelet
    no longer lists them and pycri runs none of their containers."""

    node: Node
    added: list[V1Pod] = field(default_factory=list)

    def add(self, *pods: V1Pod) -> None:
        for p in pods:
            self.added.append(p)
            self.node.kubelet.add(p)

    def remove_all(self) -> None:
        k = self.node.kubelet
        self.node.note_sandboxes()
        for p in self.added:
            k.remove(p.metadata.name)
        if k.proc is None:
            return
        names = {p.metadata.name for p in self.added}

        def gone() -> bool:
            if names & {p.metadata.name.removesuffix(f"-{NODE}") for p in k.pods()}:
                return False
            return not any(c.state == api_pb2.ContainerState.CONTAINER_RUNNING
                           for p in self.added
                           for c in cri_containers(self.node.daemon, p.metadata.uid))

        poll(f"the kubelet to stop {sorted(names)}", gone, WAIT)


@pytest.fixture
def static_pods(node: Node) -> Iterator[StaticPods]:
    pods = StaticPods(node)
    try:
        yield pods
    finally:
        pods.remove_all()


@pytest.fixture(autouse=True)
def _close_streaming_connections() -> Iterator[None]:
    yield
    close_connections()
