"""CNI results, sans-IO: 1.0.0/1.1.0, 0.3.x/0.4.0 and the legacy 0.1.0/0.2.0 ip4/ip6 form.

All of them parse into one typed form. 0.3.x/0.4.0 carry a "version" ("4"/"6") on each ips
entry, which spec 1.0.0 dropped because the address says it; here it is checked against the
address and then dropped too. 0.1.0/0.2.0 results ({"ip4": {...}, "ip6": {...}}) have no
interfaces list, so their IPs carry no interface index.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cni.errors import CNIResultError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None


@dataclass(frozen=True)
class IPConfig:
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    cni_version: str
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS
    raw: dict[str, Any]

    @classmethod
    def parse(cls, data: Any) -> Result:
        if not isinstance(data, dict):
            raise CNIResultError("result is not a JSON object")
        try:
            return _parse(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CNIResultError(f"malformed CNI result: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return self.raw

    def pod_ips(self, ifname: str = "eth0") -> list[IPAddress]:
        """IPs on the sandbox interface `ifname`, IPv4 first, otherwise in result order.

        An IP counts when its interface index points at an interface in a sandbox with that
        name; IPs carrying no interface index (or all IPs of a result without interfaces) are
        taken as the pod's."""
        chosen: list[IPAddress] = []
        for ipc in self.ips:
            if self.interfaces and ipc.interface is not None:
                if not 0 <= ipc.interface < len(self.interfaces):
                    continue
                iface = self.interfaces[ipc.interface]
                if not iface.sandbox or iface.name != ifname:
                    continue
            if ipc.address.ip not in chosen:
                chosen.append(ipc.address.ip)
        return sorted(chosen, key=lambda ip: ip.version)  # stable: keeps order within a family


def _addr(text: Any) -> IPAddress:
    if not isinstance(text, str):
        raise ValueError(f"address {text!r} is not a string")
    return ipaddress.ip_address(text)


def _opt_addr(text: Any) -> IPAddress | None:
    return None if text in (None, "") else _addr(text)


def _strs(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def _route(obj: Any) -> Route:
    if not isinstance(obj, dict):
        raise ValueError("route is not an object")
    return Route(dst=ipaddress.ip_network(obj["dst"], strict=False), gw=_opt_addr(obj.get("gw")))


def _dns(obj: Any) -> DNS:
    if obj is None:
        return DNS()
    if not isinstance(obj, dict):
        raise ValueError("dns is not an object")
    domain = obj.get("domain") or ""
    if not isinstance(domain, str):
        raise ValueError("dns.domain must be a string")
    return DNS(nameservers=_strs(obj.get("nameservers"), "dns.nameservers"), domain=domain,
               search=_strs(obj.get("search"), "dns.search"),
               options=_strs(obj.get("options"), "dns.options"))


def _check_family(version: Any, address: IPInterface) -> None:
    # CNI spec 0.4.0 "Result": "version" is "4" or "6" and names the address family.
    if version is None:
        return
    if version not in ("4", "6"):
        raise ValueError(f"ips[].version {version!r} is neither \"4\" nor \"6\"")
    if int(version) != address.version:
        raise ValueError(f"ips[].version {version} does not match address {address}")


def _parse(data: dict[str, Any]) -> Result:
    version = data.get("cniVersion", "")
    if not isinstance(version, str):
        raise ValueError("cniVersion must be a string")
    interfaces: list[Interface] = []
    for obj in data.get("interfaces") or []:
        if not isinstance(obj, dict) or not isinstance(obj.get("name", ""), str):
            raise ValueError("interface entry is not an object with a name")
        mtu = obj.get("mtu")
        interfaces.append(Interface(name=obj.get("name", ""), mac=str(obj.get("mac") or ""),
                                    sandbox=str(obj.get("sandbox") or ""),
                                    mtu=mtu if isinstance(mtu, int) else None))
    ips: list[IPConfig] = []
    routes: list[Route] = []
    if "ip4" in data or "ip6" in data:  # 0.1.0 / 0.2.0
        for key in ("ip4", "ip6"):
            block = data.get(key)
            if not block:
                continue
            if not isinstance(block, dict):
                raise ValueError(f"{key} is not an object")
            ips.append(IPConfig(address=ipaddress.ip_interface(block["ip"]),
                                gateway=_opt_addr(block.get("gateway"))))
            routes.extend(_route(r) for r in block.get("routes") or [])
    else:
        for obj in data.get("ips") or []:
            if not isinstance(obj, dict):
                raise ValueError("ips entry is not an object")
            index = obj.get("interface")
            if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
                raise ValueError(f"ips[].interface {index!r} is not an integer")
            address = ipaddress.ip_interface(obj["address"])
            _check_family(obj.get("version"), address)
            ips.append(IPConfig(address=address, gateway=_opt_addr(obj.get("gateway")), interface=index))
        routes.extend(_route(r) for r in data.get("routes") or [])
    return Result(cni_version=version, interfaces=interfaces, ips=ips, routes=routes,
                  dns=_dns(data.get("dns")), raw=data)
