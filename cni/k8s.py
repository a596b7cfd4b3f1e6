"""Kubernetes conventions on top of CNI: the CNI_ARGS every Kubernetes runtime passes and the
runtimeConfig capability arguments (CNI CONVENTIONS.md: portMappings, dns, bandwidth,
cgroupPath). CNINetwork hands each plugin only the capabilities it declares."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cni.invoke import FORBIDDEN_ARG_CHARS
from cni.quantity import parse_quantity

INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"

# The bandwidth plugin needs a burst whenever a rate is set (and refuses burst/8 >= 4 GiB).
# The kubelet's own CNI code used MaxInt32 bits ("2Gbit is the equivalent of no limit");
# containerd passes MaxUint32, CRI-O MaxUint32*8-1. Any of them means "no burst limit".
DEFAULT_BURST = 2**31 - 1
# The kubelet refuses bandwidth annotations outside [1k, 1P] bits/s; so do we.
MIN_BANDWIDTH = 1000
MAX_BANDWIDTH = 10**15
PROTOCOLS = ("tcp", "udp", "sctp")


def _check_arg(key: str, value: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"CNI_ARGS value for {key} must be a string, not {type(value).__name__}")
    for ch in FORBIDDEN_ARG_CHARS:
        if ch in value:
            raise ValueError(f"CNI_ARGS value for {key} contains a forbidden character {ch!r}: {value!r}")
    return value


def cni_args(*, namespace: str, name: str, infra_id: str, uid: str) -> dict[str, str]:
    """The CNI_ARGS of a pod, in the order the kubelet's runtimes pass them. IgnoreUnknown=1
    asks plugins not to fail on the K8S_* keys they do not know (CONVENTIONS.md)."""
    return {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": _check_arg("K8S_POD_NAMESPACE", namespace),
        "K8S_POD_NAME": _check_arg("K8S_POD_NAME", name),
        "K8S_POD_INFRA_CONTAINER_ID": _check_arg("K8S_POD_INFRA_CONTAINER_ID", infra_id),
        "K8S_POD_UID": _check_arg("K8S_POD_UID", uid),
    }


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str  # any case; sent lowercase
    host_ip: str = ""


def parse_bandwidth(what: str, text: str) -> int:
    """A bandwidth annotation value in bits per second ("10M" -> 10_000_000)."""
    try:
        bits = parse_quantity(text)
    except ValueError as exc:
        raise ValueError(f"{what} bandwidth: {exc}") from None
    if bits < MIN_BANDWIDTH:
        raise ValueError(f"{what} bandwidth {text!r} is unreasonably small (< 1k bits/s)")
    if bits > MAX_BANDWIDTH:
        raise ValueError(f"{what} bandwidth {text!r} is unreasonably large (> 1P bits/s)")
    return bits


def _port(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise ValueError(f"invalid {what} {value!r}: must be 1-65535")
    return value


def port_mapping_args(mappings: Iterable[PortMapping]) -> list[dict[str, Any]]:
    """The portMappings capability. Ports without a host port are not mapped (containerd and
    CRI-O skip them too: the CRI lists every declared container port)."""
    out: list[dict[str, Any]] = []
    for pm in mappings:
        if pm.host_port == 0:
            continue
        proto = pm.protocol.lower()
        if proto not in PROTOCOLS:
            raise ValueError(f"invalid port mapping protocol {pm.protocol!r}")
        entry: dict[str, Any] = {"hostPort": _port("host port", pm.host_port),
                                 "containerPort": _port("container port", pm.container_port),
                                 "protocol": proto}
        if pm.host_ip:
            try:
                entry["hostIP"] = str(ipaddress.ip_address(pm.host_ip))
            except ValueError:
                raise ValueError(f"invalid port mapping host IP {pm.host_ip!r}") from None
        out.append(entry)
    return out


def capability_args(*, port_mappings: Iterable[PortMapping] = (), dns_servers: Sequence[str] = (),
                    dns_searches: Sequence[str] = (), dns_options: Sequence[str] = (),
                    ingress_bandwidth: str | None = None, egress_bandwidth: str | None = None,
                    cgroup_path: str = "") -> dict[str, Any]:
    """runtimeConfig capability arguments; empty ones are left out.

    ingress_bandwidth / egress_bandwidth are the pod's bandwidth annotation values; rates go
    to the bandwidth plugin in bits per second, bursts in bits."""
    caps: dict[str, Any] = {}
    mappings = port_mapping_args(port_mappings)
    if mappings:
        caps["portMappings"] = mappings
    if dns_servers or dns_searches or dns_options:
        caps["dns"] = {"servers": list(dns_servers), "searches": list(dns_searches),
                       "options": list(dns_options)}
    bandwidth: dict[str, int] = {}
    # Only None means "no annotation": an empty value is as invalid as it is to the kubelet.
    if ingress_bandwidth is not None:
        bandwidth["ingressRate"] = parse_bandwidth("ingress", ingress_bandwidth)
        bandwidth["ingressBurst"] = DEFAULT_BURST
    if egress_bandwidth is not None:
        bandwidth["egressRate"] = parse_bandwidth("egress", egress_bandwidth)
        bandwidth["egressBurst"] = DEFAULT_BURST
    if bandwidth:
        caps["bandwidth"] = bandwidth
    if cgroup_path:
        caps["cgroupPath"] = cgroup_path
    return caps

