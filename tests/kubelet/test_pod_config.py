"""What the kubelet computes for a pod and hands to pycri, seen from inside and on the node:
hostname and DNS settings, /etc/hosts entries, the pod IP in the downward API, and CPU and
memory requests and limits in the container's cgroups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    V1EnvVar,
    V1EnvVarSource,
    V1HostAlias,
    V1ObjectFieldSelector,
    V1Pod,
    V1PodDNSConfig,
    V1PodDNSConfigOption,
    V1ResourceRequirements,
)

from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import Kubelet
from tests.kubelet.pods import container, cri_containers, pod, running, wait_pod

pytestmark = pytest.mark.kubelet
CPU = Path("/sys/fs/cgroup/cpu")
MEMORY = Path("/sys/fs/cgroup/memory")


def _named() -> V1Pod:
    env = [V1EnvVar(name="MY_IP", value_from=V1EnvVarSource(
        field_ref=V1ObjectFieldSelector(field_path="status.podIP")))]
    return pod("named", container("app", ["sleep", "1000"], env=env),
               hostname="web-1", subdomain="backend", dns_policy="None",
               dns_config=V1PodDNSConfig(nameservers=["10.9.8.7"], searches=["svc.example"],
                                         options=[V1PodDNSConfigOption(name="ndots",
                                                                       value="2")]),
               host_aliases=[V1HostAlias(ip="10.1.2.3", hostnames=["db.example"])])


def _sized() -> V1Pod:
    res = V1ResourceRequirements(requests={"cpu": "250m", "memory": "32Mi"},
                                 limits={"cpu": "500m", "memory": "64Mi"})
    return pod("sized", container("app", ["sleep", "1000"], resources=res))


@pytest.fixture(scope="module")
def configured(node: Node) -> Iterator[dict[str, V1Pod]]:
    node.kubelet.ensure()
    pods = StaticPods(node)
    made = [_named(), _sized()]
    pods.add(*made)
    try:
        for p in made:
            wait_pod(node.kubelet, p.metadata.name, "running", lambda p: running(p, "app"))
        yield {p.metadata.name: p for p in made}
    finally:
        pods.remove_all()


def test_hostname_dns_and_hosts(kubelet: Kubelet, configured: dict[str, V1Pod]) -> None:
    assert kubelet.run("named", "app", "hostname") == "web-1\n"
    resolv = kubelet.run("named", "app", "cat /etc/resolv.conf").splitlines()
    assert "nameserver 10.9.8.7" in resolv
    assert "search svc.example" in resolv
    assert "options ndots:2" in resolv
    hosts = kubelet.run("named", "app", "cat /etc/hosts")
    assert any(line.split()[:2] == ["10.1.2.3", "db.example"] for line in hosts.splitlines())
    p = kubelet.pod("named")
    assert p is not None and p.status.pod_ip
    # The kubelet's own hosts entry for the pod: its IP and hostname.
    assert any(line.split()[:1] == [p.status.pod_ip] and "web-1" in line.split()
               for line in hosts.splitlines()), hosts


def test_downward_api_pod_ip(kubelet: Kubelet, configured: dict[str, V1Pod]) -> None:
    p = kubelet.pod("named")
    assert p is not None
    assert f"MY_IP={p.status.pod_ip}" in kubelet.run("named", "app", "env").splitlines()


def test_requests_and_limits_reach_the_cgroups(kubelet: Kubelet, node: Node,
                                               configured: dict[str, V1Pod]) -> None:
    uid = configured["sized"].metadata.uid
    [ctr] = cri_containers(node.daemon, uid, "app")
    root = kubelet.cgroup_root.lstrip("/")
    [cpu] = list(CPU.glob(f"{root}/kubepods/burstable/pod{uid}/pycri-{ctr.id}"))
    [mem] = list(MEMORY.glob(f"{root}/kubepods/burstable/pod{uid}/pycri-{ctr.id}"))
    assert int((cpu / "cpu.shares").read_text()) == 256  # 250m of 1024 per core
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000  # 500m
    assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
    assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    # What the container itself is told.
    st = kubelet.run("sized", "app", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert int(st) == 64 * 1024 * 1024
