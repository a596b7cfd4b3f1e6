"""Pod and container security settings as the kubelet translates them into the CRI, seen from
inside the containers: users and groups, capabilities, no_new_privs, seccomp, a read-only root,
a shared process namespace, safe sysctls and the host's network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    V1Capabilities,
    V1Pod,
    V1PodSecurityContext,
    V1SeccompProfile,
    V1SecurityContext,
    V1Sysctl,
)

from cri.api import api_pb2
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import Kubelet
from tests.kubelet.pods import container, cri_sandboxes, pod, running, wait_pod

pytestmark = pytest.mark.kubelet


def _restricted() -> V1Pod:
    """What the "restricted" Pod Security Standard asks of a pod."""
    sc = V1SecurityContext(run_as_user=33, run_as_group=33, run_as_non_root=True,
                           allow_privilege_escalation=False, read_only_root_filesystem=True,
                           capabilities=V1Capabilities(drop=["ALL"]),
                           seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))
    return pod("restricted", container("app", ["sleep", "1000"], security_context=sc),
               security_context=V1PodSecurityContext(supplemental_groups=[1234]))


def _shared_pids() -> V1Pod:
    return pod("sharedpids", container("one", ["sleep", "1001"]),
               container("two", ["sleep", "1002"]), share_process_namespace=True,
               security_context=V1PodSecurityContext(sysctls=[
                   V1Sysctl(name="net.ipv4.ip_unprivileged_port_start", value="80"),
                   V1Sysctl(name="kernel.shm_rmid_forced", value="1")]))


def _host_network() -> V1Pod:
    return pod("hostnet", container("app", ["sleep", "1000"]), host_network=True)


@pytest.fixture(scope="module")
def secured(node: Node) -> Iterator[dict[str, V1Pod]]:
    node.kubelet.ensure()
    pods = StaticPods(node)
    made = [_restricted(), _shared_pids(), _host_network()]
    pods.add(*made)
    try:
        for p in made:
            wait_pod(node.kubelet, p.metadata.name, "running",
                     lambda p: all(running(p, c.name) for c in p.spec.containers))
        yield {p.metadata.name: p for p in made}
    finally:
        pods.remove_all()


def proc_status(kubelet: Kubelet, pod_name: str, ctr: str) -> dict[str, str]:
    out = kubelet.run(pod_name, ctr, "cat /proc/self/status")
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_restricted_container(kubelet: Kubelet, secured: dict[str, V1Pod]) -> None:
    ident = kubelet.run("restricted", "app", "id")
    assert ident.startswith("uid=33(www-data) gid=33(www-data) groups=")
    assert "1234" in ident  # the pod's supplemental group
    st = proc_status(kubelet, "restricted", "app")
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == "0000000000000000"
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"  # filter mode: the runtime's default profile
    # A read-only root: only what the pod mounts is writable.
    touched = kubelet.run("restricted", "app", "touch /probe-file", check=False)
    assert "exited with 1" in touched and "Read-only file system" in touched
    # The kubelet asks for the usual masked and read-only /proc paths.
    mounts = {f[4]: f[5] for f in (line.split() for line in kubelet.run(
        "restricted", "app", "cat /proc/self/mountinfo").splitlines())}
    assert "/proc/keys" in mounts and "/proc/timer_list" in mounts  # masked: something over it
    assert mounts["/proc/sys"].split(",")[0] == "ro"


def test_shared_process_namespace_and_sysctls(kubelet: Kubelet,
                                              secured: dict[str, V1Pod]) -> None:
    seen_from_one = kubelet.run("sharedpids", "one", "ps -o args")
    assert "sleep 1002" in seen_from_one and "sleep 1001" in seen_from_one
    for ctr in ("one", "two"):
        assert kubelet.run("sharedpids", ctr,
                           "cat /proc/sys/net/ipv4/ip_unprivileged_port_start") == "80\n"
        assert kubelet.run("sharedpids", ctr, "cat /proc/sys/kernel/shm_rmid_forced") == "1\n"


def test_host_network(kubelet: Kubelet, node: Node, secured: dict[str, V1Pod]) -> None:
    links = kubelet.run("hostnet", "app", "ls /sys/class/net").split()
    assert node.daemon.bridge in links  # the host's interfaces, the suite's bridge among them
    [sandbox] = cri_sandboxes(node.daemon, secured["hostnet"].metadata.uid)
    st = node.daemon.runtime().PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox.id), timeout=10).status
    assert st.linux.namespaces.options.network == api_pb2.NamespaceMode.NODE
    assert not Path(f"/var/run/netns/pycri-{sandbox.id[:16]}").exists()
