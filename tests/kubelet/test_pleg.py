"""The same pod life under both of the kubelet's ways to notice container changes: the generic
PLEG (it relists pods and containers every second) and the Evented PLEG (GetContainerEvents;
the relist then runs only every 300 s, so a missing or wrong event shows as a pod that does not
move). Then the removal of the manifests: nothing of the pods may stay on the node."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import V1ContainerPort, V1Pod

from cri.api import api_pb2
from tests.e2e.containers import IMAGE
from tests.fixtures.registry import free_port
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import NAMESPACE, NODE, Kubelet, all_hierarchies
from tests.kubelet.pods import (
    container,
    cri_containers,
    cri_sandboxes,
    ctr_status,
    memory_hog,
    oom_killed,
    pod,
    pod_ip,
    poll,
    ready,
    running,
    wait_pod,
)

pytestmark = pytest.mark.kubelet
# Container GC removes the sandboxes of deleted pods: it runs once a minute.
GC_WAIT = 150.0
NETNS = Path("/var/run/netns")
HOST_PORT = free_port()
PLEGS = {"generic": {}, "evented": {"featureGates": {"EventedPLEG": True}}}


@pytest.fixture(scope="module", params=list(PLEGS))
def pleg(node: Node, request: pytest.FixtureRequest) -> Iterator[dict[str, V1Pod]]:
    """Under the PLEG of the parameter: a steady pod and one whose container exits (and is
    started again, restartPolicy Always)."""
    node.kubelet.ensure(**PLEGS[request.param])
    pods = StaticPods(node)
    web = "echo steady > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"
    made = {"steady": pod("steady", container(
                "app", ["sh", "-c", web],
                ports=[V1ContainerPort(container_port=8080, host_port=HOST_PORT)])),
            "exits": pod("exits", container("app", ["sh", "-c", "echo run; exit 0"])),
            # Under the Evented PLEG the kubelet takes the container's end, reason included,
            # from the event alone.
            "oom": memory_hog()}
    pods.add(*made.values())
    try:
        yield made
    finally:
        pods.remove_all()


@pytest.fixture
def kubelet(node: Node, pleg: dict[str, V1Pod]) -> Kubelet:
    """The kubelet as the module's parameter configured it (not the base configuration)."""
    return node.kubelet


def metric(kubelet: Kubelet, name: str) -> float:
    text = kubelet.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_uses_the_pleg_asked_for(kubelet: Kubelet, pleg: dict[str, V1Pod],
                                 request: pytest.FixtureRequest) -> None:
    evented = "evented" in request.node.callspec.id
    connected = metric(kubelet, "kubelet_evented_pleg_connection_success_count")
    errors = metric(kubelet, "kubelet_evented_pleg_connection_error_count")
    assert (connected >= 1, errors) == (evented, 0.0)


def test_pod_starts(kubelet: Kubelet, node: Node, pleg: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "steady", "running and ready",
                 lambda p: running(p, "app") and ready(p))
    st = ctr_status(p, "app")
    assert st is not None and st.restart_count == 0
    # kubectl's "Image:" is the image's name (the kubelet created the container by image id)
    # and "Image ID:" its digest.
    assert st.image == IMAGE and st.image_id.startswith("ctr.test/busybox@sha256:")
    uid = pleg["steady"].metadata.uid
    [ctr] = cri_containers(node.daemon, uid, "app")
    assert ctr.state == api_pb2.ContainerState.CONTAINER_RUNNING
    assert st.container_id == f"pycri://{ctr.id}"
    [sandbox] = cri_sandboxes(node.daemon, uid)
    assert sandbox.state == api_pb2.PodSandboxState.SANDBOX_READY
    assert p.status.pod_ip and p.status.pod_ip == pod_ip(node.daemon, sandbox.id)
    # The hostPort (CNI portmap) answers on the node's address on the pod network.
    gateway = node.daemon.subnet.rsplit(".", 1)[0] + ".1"
    body = poll("the hostPort to answer", lambda: fetch(gateway, HOST_PORT))
    assert body.endswith(b"steady\n")


def fetch(host: str, port: int) -> bytes | None:
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            return b"".join(iter(lambda: s.recv(65536), b""))
    except OSError:
        return None


def test_exited_container_is_started_again(kubelet: Kubelet, node: Node,
                                           pleg: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "exits", "started again twice",
                 lambda p: (ctr_status(p, "app") or pytest.fail("no status")).restart_count >= 2)
    st = ctr_status(p, "app")
    assert st is not None and st.last_state.terminated is not None
    assert (st.last_state.terminated.exit_code, st.last_state.terminated.reason) == (0,
                                                                                     "Completed")
    attempts = cri_containers(node.daemon, pleg["exits"].metadata.uid, "app")
    assert attempts and attempts[-1].metadata.attempt >= 2


def test_oom_kill_is_reported(kubelet: Kubelet, pleg: dict[str, V1Pod]) -> None:
    wait_pod(kubelet, "oom", "restarted after an OOM kill", oom_killed)


def test_removal_leaves_nothing(kubelet: Kubelet, node: Node, pleg: dict[str, V1Pod]) -> None:
    for p in pleg.values():
        wait_pod(kubelet, p.metadata.name, "known to the kubelet", lambda p: True)
    known = [Known.of(node, p) for p in pleg.values()]
    for k in known:  # what the checks below look for is there while the pods run
        assert k.sandboxes and k.ips, k
        present = leftovers(node, kubelet, k)
        if k.name != "steady":
            present.pop("iptables rules")  # only the steady pod has a hostPort
        assert all(present.values()), present
    assert bridge_ports(node)
    for p in pleg.values():
        kubelet.remove(p.metadata.name)

    def left() -> dict[str, dict[str, list[str]]]:
        found = {k.name: {what: v for what, v in leftovers(node, kubelet, k).items() if v}
                 for k in known}
        found = {name: v for name, v in found.items() if v}
        if bridge_ports(node):
            found["bridge"] = {"veths": bridge_ports(node)}
        return found

    try:
        poll("the kubelet and pycri to remove everything of the pods", lambda: not left(),
             GC_WAIT)
    except AssertionError:
        raise AssertionError(f"left behind: {left()}") from None


@dataclass(frozen=True)
class Known:
    """What identifies a pod's traces, noted while it runs."""

    name: str
    uid: str
    sandboxes: tuple[str, ...]
    ids: tuple[str, ...]  # sandboxes and containers
    ips: tuple[str, ...]

    @classmethod
    def of(cls, node: Node, p: V1Pod) -> Known:
        uid = p.metadata.uid
        sandboxes = tuple(s.id for s in cri_sandboxes(node.daemon, uid))
        node.sandboxes.update(sandboxes)
        ctrs = tuple(c.id for c in cri_containers(node.daemon, uid))
        return cls(p.metadata.name, uid, sandboxes, sandboxes + ctrs,
                   tuple(pod_ip(node.daemon, s) for s in sandboxes))


def bridge_ports(node: Node) -> list[str]:
    """The veths on the suite's bridge (only this module's pods exist while it runs)."""
    out = subprocess.run(["ip", "-o", "link", "show", "master", node.daemon.bridge],
                         capture_output=True, text=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines()]


def leftovers(node: Node, kubelet: Kubelet, k: Known) -> dict[str, list[str]]:
    """The pod as the kubelet and pycri list it, and its mounts, network namespace, IP lease,
    cgroups, pycri state dirs, kubelet pod dir and log dir on the node."""
    d = node.daemon
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if any(i in line for i in (k.uid, *k.ids))]
    netns = [n for n in (f"pycri-{s[:16]}" for s in k.sandboxes) if (NETNS / n).exists()]
    leases = [str(f) for f in glob(d.ipam_dir, "**/*") if f.name in k.ips]
    cgroups = [str(c) for h in all_hierarchies()
               for c in glob(h / kubelet.cgroup_root.lstrip("/"), f"kubepods/**/pod{k.uid}")]
    state = [str(x) for top in (d.root, d.runroot) for kind in ("sandboxes", "containers")
             for x in glob(top / kind, "*") if x.name in k.ids]
    rules = [line for line in subprocess.run(["iptables-save"], capture_output=True,
                                             text=True).stdout.splitlines()
             if any(s in line for s in k.sandboxes)]
    dirs = [str(x) for x in (kubelet.root_dir / "pods" / k.uid,
                             kubelet.pod_logs / f"{NAMESPACE}_{k.name}-{NODE}_{k.uid}")
            if x.exists()]
    return {"listed by the kubelet": [k.name] if kubelet.pod(k.name) else [],
            "listed by pycri": [s.id for s in cri_sandboxes(d, k.uid)]
            + [c.id for c in cri_containers(d, k.uid)],
            "mounts": mounts, "netns": netns, "IP leases": leases, "cgroups": cgroups,
            "iptables rules": rules,
            "pycri state": state, "kubelet dirs": dirs}


def glob(top: Path, pattern: str) -> list[Path]:
    """``top.glob(pattern)``, [] when a dir went away while it was walked (what is removed is
    what the test waits for)."""
    try:
        return list(top.glob(pattern))
    except OSError:
        return []
