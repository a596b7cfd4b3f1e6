"""Kubernetes conventions on top of CNI: the CNI_ARGS the kubelet's runtimes pass and the
runtimeConfig capability arguments (portMappings, dns, bandwidth, cgroupPath)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

# The bandwidth plugin needs a burst whenever a rate is set; like CRI-O (ocicni) and the old
# kubenet we use MaxInt32 bits, which the plugin accepts (its limit is burst/8 < 4 GiB).
DEFAULT_BURST = 2**31 - 1
# The kubelet rejects bandwidth annotations outside [1k, 1P]; do the same.
MIN_BANDWIDTH = 1000
MAX_BANDWIDTH = 10**15

_FORBIDDEN = (";", "=", "\x00", "\n", "\r")

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?\d+))?$"
)


def _check_arg(key: str, value: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"CNI_ARGS value for {key} must be a string, not {type(value).__name__}")
    for ch in _FORBIDDEN:
        if ch in value:
            raise ValueError(f"CNI_ARGS value for {key} contains a forbidden character {ch!r}: {value!r}")
    return value


def cni_args(*, namespace: str, name: str, infra_id: str, uid: str) -> dict[str, str]:
    """The CNI_ARGS key/values every Kubernetes runtime passes (in this order)."""
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
    protocol: str
    host_ip: str = ""


def parse_quantity(text: str) -> int:
    """A Kubernetes resource quantity as an integer, rounded up ("10M", "1Gi", "500k", "1e6")."""
    if not isinstance(text, str):
        raise ValueError(f"invalid quantity {text!r}: not a string")
    m = _QUANTITY_RE.match(text.strip())
    if m is None:
        raise ValueError(f"invalid quantity {text!r}: expected a number with an optional suffix "
                         "(k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, m) or exponent")
    try:
        num = Decimal(m.group("num"))
        if m.group("exp") is not None:
            exp = int(m.group("exp"))
            if abs(exp) > 64:
                raise ValueError(f"invalid quantity {text!r}: exponent out of range")
            value = num.scaleb(exp)
        else:
            value = num * _SUFFIXES[m.group("suffix") or ""]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {text!r}") from exc
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def parse_bandwidth(what: str, text: str) -> int:
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


def capability_args(*, port_mappings: Iterable[PortMapping], dns_servers: list[str],
                    dns_searches: list[str], dns_options: list[str], ingress_bandwidth: str | None,
                    egress_bandwidth: str | None, cgroup_path: str) -> dict[str, Any]:
    """runtimeConfig capability arguments; CNINetwork hands each plugin only those it declares."""
    caps: dict[str, Any] = {}
    mappings: list[dict[str, Any]] = []
    for pm in port_mappings:
        proto = pm.protocol.lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid port mapping protocol {pm.protocol!r}")
        entry: dict[str, Any] = {"hostPort": _port("host port", pm.host_port),
                                 "containerPort": _port("container port", pm.container_port),
                                 "protocol": proto}
        if pm.host_ip:
            entry["hostIP"] = pm.host_ip
        mappings.append(entry)
    if mappings:
        caps["portMappings"] = mappings
    if dns_servers or dns_searches or dns_options:
        caps["dns"] = {"servers": list(dns_servers), "searches": list(dns_searches),
                       "options": list(dns_options)}
    bandwidth: dict[str, int] = {}
    if ingress_bandwidth is not None and ingress_bandwidth != "":
        bandwidth["ingressRate"] = parse_bandwidth("ingress", ingress_bandwidth)
        bandwidth["ingressBurst"] = DEFAULT_BURST
    if egress_bandwidth is not None and egress_bandwidth != "":
        bandwidth["egressRate"] = parse_bandwidth("egress", egress_bandwidth)
        bandwidth["egressBurst"] = DEFAULT_BURST
    if bandwidth:
        caps["bandwidth"] = bandwidth
    if cgroup_path:
        caps["cgroupPath"] = cgroup_path
    return caps

