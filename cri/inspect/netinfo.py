"""A pod's network as the host sees it: its IPs (as the daemon recorded them from CNI), and for
each interface in its namespace the host's end of the veth pair and the bridge it is on."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cri.inspect import netlink
from sandbox import netns

SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class Interface:
    name: str  # inside the pod
    index: int
    mac: str
    up: bool
    kind: str
    host_peer: str  # the host's end of a veth; "" when it is not on the host (or not a veth)
    host_peer_index: int
    bridge: str  # the host end's master, "" when it has none


def pod_interfaces(netns_path: str, sys_net: Path = SYS_NET) -> list[Interface]:
    """The pod namespace's interfaces but lo. Raises OSError when the namespace is gone."""
    sock = netns.open_socket(Path(netns_path), socket.AF_NETLINK, socket.SOCK_RAW,
                             netlink.NETLINK_ROUTE)
    with sock:
        links = netlink.list_links(sock)
    return [_with_peer(link, sys_net) for link in links if link.name != "lo"]


def _with_peer(link: netlink.Link, sys_net: Path) -> Interface:
    peer, bridge = host_end(link.index, link.link, sys_net) if link.link else ("", "")
    return Interface(link.name, link.index, link.mac, link.up, link.kind, peer,
                     link.link if peer else 0, bridge)


def host_end(pod_index: int, peer_index: int, sys_net: Path = SYS_NET) -> tuple[str, str]:
    """(name, bridge) of the host interface with ``peer_index`` whose own peer is the pod's
    ``pod_index``: ifindexes are per namespace, so an index alone could name an unrelated
    device; a veth's iflink is its peer's index, which pins it down."""
    for dev in sys_net.iterdir() if sys_net.is_dir() else []:
        try:
            if int((dev / "ifindex").read_text()) != peer_index:
                continue
            if int((dev / "iflink").read_text()) != pod_index:
                continue
        except (OSError, ValueError):
            continue
        master = dev / "master"
        bridge = os.path.basename(os.readlink(master)) if master.is_symlink() else ""
        return dev.name, bridge
    return "", ""
