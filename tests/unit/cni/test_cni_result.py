from __future__ import annotations

import ipaddress

import pytest

from cni.errors import CNIResultError
from cni.result import Result

V100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"},
        {"name": "net1", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
        {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
        {"address": "10.99.0.5/16", "interface": 3},
        {"address": "10.77.0.1/16", "interface": 0},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"], "options": ["ndots:5"]},
}

V040 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/y"}],
    "ips": [{"version": "4", "address": "10.22.0.7/24", "gateway": "10.22.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}],
    "dns": {},
}


def test_parse_100() -> None:
    r = Result.parse(V100)
    assert r.cni_version == "1.0.0"
    assert [i.name for i in r.interfaces] == ["cni0", "veth1234", "eth0", "net1"]
    assert r.interfaces[2].sandbox == "/run/netns/x" and r.interfaces[0].sandbox == ""
    assert r.ips[1].address == ipaddress.ip_interface("10.88.0.5/16")
    assert r.ips[1].gateway == ipaddress.ip_address("10.88.0.1")
    assert r.ips[1].interface == 2
    assert r.routes[1].gw == ipaddress.ip_address("fd00::1")
    assert r.routes[0].dst == ipaddress.ip_network("0.0.0.0/0")
    assert r.dns.nameservers == ["10.96.0.10"] and r.dns.options == ["ndots:5"]
    assert r.pod_ips("eth0") == [ipaddress.ip_address("10.88.0.5"), ipaddress.ip_address("fd00::5")]
    assert r.pod_ips("net1") == [ipaddress.ip_address("10.99.0.5")]
    assert r.pod_ips("cni0") == []  # host-side interface: no sandbox
    assert r.to_dict() is V100


def test_parse_040() -> None:
    r = Result.parse(V040)
    assert r.cni_version == "0.4.0"
    assert r.pod_ips("eth0") == [ipaddress.ip_address("10.22.0.7")]
    assert r.pod_ips("eth1") == []
    assert r.dns.nameservers == []


def test_no_interfaces_means_all_ips_v4_first() -> None:
    r = Result.parse({"cniVersion": "0.3.1", "ips": [
        {"version": "6", "address": "fd00::9/64"}, {"version": "4", "address": "10.1.0.9/24"}]})
    assert r.pod_ips("eth0") == [ipaddress.ip_address("10.1.0.9"), ipaddress.ip_address("fd00::9")]


def test_legacy_020() -> None:
    r = Result.parse({"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24", "gateway": "10.3.0.1",
                                                      "routes": [{"dst": "0.0.0.0/0"}]}})
    assert r.pod_ips("eth0") == [ipaddress.ip_address("10.3.0.4")]
    assert len(r.routes) == 1


@pytest.mark.parametrize("bad", [
    [], {"ips": [{"address": "nonsense"}]}, {"ips": [{}]},
    {"ips": [{"address": "10.0.0.1/8", "interface": "0"}]},
    {"routes": [{"gw": "10.0.0.1"}]}, {"dns": {"nameservers": "10.0.0.1"}},
    {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.1/8"}]},
    {"cniVersion": "0.3.1", "ips": [{"version": 4, "address": "10.0.0.1/8"}]},
])
def test_malformed(bad: object) -> None:
    with pytest.raises(CNIResultError):
        Result.parse(bad)


def test_040_version_field_is_checked_then_dropped() -> None:
    r = Result.parse({"cniVersion": "0.4.0", "ips": [
        {"version": "4", "address": "10.5.0.2/16"}, {"version": "6", "address": "fd00:5::2/64"}]})
    assert [ip.address.version for ip in r.ips] == [4, 6]
    assert Result.parse({"cniVersion": "1.0.0", "ips": [{"address": "10.5.0.2/16"}]}).ips == r.ips[:1]


def test_pod_ips_v4_first_then_v6_keeping_order_and_deduplicated() -> None:
    r = Result.parse({"cniVersion": "1.0.0",
                      "interfaces": [{"name": "eth0", "sandbox": "/run/netns/a"}],
                      "ips": [{"address": "fd00::2/64", "interface": 0},
                              {"address": "10.0.0.9/24", "interface": 0},
                              {"address": "10.0.0.3/24", "interface": 0},
                              {"address": "10.0.0.9/24", "interface": 0},
                              {"address": "10.0.0.7/24", "interface": 5}]})
    assert [str(ip) for ip in r.pod_ips("eth0")] == ["10.0.0.9", "10.0.0.3", "fd00::2"]
