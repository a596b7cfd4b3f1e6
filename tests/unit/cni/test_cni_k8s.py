from __future__ import annotations

import pytest

from cni import k8s
from cni.invoke import encode_args
from cni.quantity import parse_quantity


def test_cni_args() -> None:
    args = k8s.cni_args(namespace="default", name="web-0", infra_id="abc123", uid="u-1")
    assert args == {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0",
                    "K8S_POD_INFRA_CONTAINER_ID": "abc123", "K8S_POD_UID": "u-1"}
    assert encode_args(args) == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
                                 "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1")


@pytest.mark.parametrize("evil", ["a;IP=10.0.0.5", "a=b", "a\x00", "a\nb", "a\rb"])
@pytest.mark.parametrize("field", ["namespace", "name", "infra_id", "uid"])
def test_cni_args_injection_rejected(field: str, evil: str) -> None:
    kw = {"namespace": "ns", "name": "n", "infra_id": "id", "uid": "u", field: evil}
    with pytest.raises(ValueError, match="forbidden"):
        k8s.cni_args(**kw)


def test_encode_args_rejects_injection() -> None:
    with pytest.raises(ValueError):
        encode_args({"K": "v;IP=1.2.3.4"})
    with pytest.raises(ValueError):
        encode_args({"K;X": "v"})


@pytest.mark.parametrize(("text", "bits"), [
    ("10M", 10_000_000), ("1Gi", 2**30), ("500k", 500_000), ("1000000", 1_000_000),
    ("1.5M", 1_500_000), ("2Mi", 2 * 2**20), ("1e6", 1_000_000), ("1E3", 1000), ("1P", 10**15),
    ("1000500m", 1001), ("1000.0001", 1001),
])
def test_bandwidth_quantities(text: str, bits: int) -> None:
    assert k8s.parse_bandwidth("ingress", text) == bits


@pytest.mark.parametrize("text", ["", "ten", "10 M", "10MB", "10mi", "-5M", "0", "999", "2P", "1e",
                                  "M", "1.2.3"])
def test_bad_bandwidth(text: str) -> None:
    with pytest.raises(ValueError, match="bandwidth"):
        k8s.parse_bandwidth("egress", text)


def _caps(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"port_mappings": [], "dns_servers": [], "dns_searches": [],
                               "dns_options": [], "ingress_bandwidth": None, "egress_bandwidth": None,
                               "cgroup_path": ""}
    base.update(kw)
    return k8s.capability_args(**base)  # type: ignore[arg-type]


def test_capability_args_empty() -> None:
    assert _caps() == {}


def test_capability_args_full() -> None:
    caps = _caps(port_mappings=[k8s.PortMapping(8080, 80, "TCP"),
                                k8s.PortMapping(53, 53, "udp", "127.0.0.1")],
                 dns_servers=["10.96.0.10"], dns_searches=["svc.cluster.local"], dns_options=["ndots:5"],
                 ingress_bandwidth="10M", egress_bandwidth="1Mi", cgroup_path="/kubepods/pod1")
    assert caps == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                         {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}],
        "dns": {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]},
        "bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 2147483647,
                      "egressRate": 2**20, "egressBurst": 2147483647},
        "cgroupPath": "/kubepods/pod1",
    }


def test_capability_args_one_direction_and_errors() -> None:
    assert _caps(egress_bandwidth="1M") == {"bandwidth": {"egressRate": 10**6, "egressBurst": 2**31 - 1}}
    with pytest.raises(ValueError, match="ingress bandwidth"):
        _caps(ingress_bandwidth="lots")
    with pytest.raises(ValueError, match="protocol"):
        _caps(port_mappings=[k8s.PortMapping(1, 1, "icmp")])
    with pytest.raises(ValueError, match="port"):
        _caps(port_mappings=[k8s.PortMapping(70000, 1, "tcp")])


def test_capability_args_defaults_and_host_port_zero() -> None:
    assert k8s.capability_args() == {}
    caps = k8s.capability_args(port_mappings=[k8s.PortMapping(0, 80, "TCP"),
                                              k8s.PortMapping(8443, 443, "SCTP", "::1")])
    assert caps == {"portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "sctp",
                                      "hostIP": "::1"}]}


@pytest.mark.parametrize("host_ip", ["localhost", "10.0.0.1;x", "300.1.1.1"])
def test_port_mapping_host_ip_must_be_an_address(host_ip: str) -> None:
    with pytest.raises(ValueError, match="host IP"):
        k8s.port_mapping_args([k8s.PortMapping(80, 80, "tcp", host_ip)])


def test_empty_bandwidth_annotation_is_invalid() -> None:
    # Only an absent annotation (None) means "no limit", as for the kubelet.
    with pytest.raises(ValueError, match="ingress bandwidth"):
        k8s.capability_args(ingress_bandwidth="")


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), ("1k", 1000), ("1Ki", 1024), ("1E", 10**18), ("1Ei", 2**60), ("1.5Gi", 3 * 2**29),
    ("100m", 1), ("1n", 1), ("0", 0), ("+5", 5), (".5k", 500), ("5.", 5), ("1e-3", 1), ("2E2", 200),
])
def test_parse_quantity(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", " 1M", "1M ", "1KB", "1K", "0x10", "1e999", "inf", "nan", "1_000"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)
