"""Just enough rtnetlink to list a namespace's links: one RTM_GETLINK dump request and a
parser for its answers (sans-IO, so the parser is tested on bytes).

From the pod's side of a veth, IFLA_LINK is the peer's ifindex in the other namespace: the
host's end of the pod's eth0. Reading the link table sends nothing on any network.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO = 1, 3, 5, 18
IFLA_INFO_KIND = 1
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type


class NetlinkError(Exception):
    pass


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str  # "veth", "loopback" is "" ...: IFLA_INFO_KIND when the driver reports one
    link: int  # IFLA_LINK: a veth's peer ifindex (in the peer's namespace); 0 when none
    mac: str
    up: bool


def dump_request(seq: int = 1) -> bytes:
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[pos + _RTATTR.size:pos + length]  # drop the nested flags
        pos += _align(length)
    return out


def parse(data: bytes) -> tuple[list[Link], bool]:
    """The links in one recv()'s worth of answers, and whether the dump is done."""
    links: list[Link] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            raise NetlinkError(f"bad netlink message length {length}")
        body = data[pos + _NLMSGHDR.size:pos + length]
        pos += _align(length)
        if kind == NLMSG_DONE:
            return links, True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", body)[0]
            if errno:
                raise NetlinkError(f"RTM_GETLINK: errno {errno}")
            continue
        if kind != RTM_NEWLINK or len(body) < _IFINFOMSG.size:
            continue
        _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
        attrs = _attrs(body[_IFINFOMSG.size:])
        info = _attrs(attrs.get(IFLA_LINKINFO, b""))
        links.append(Link(
            index=index,
            name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
            kind=info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(errors="replace"),
            link=struct.unpack("=i", attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else 0,
            mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
            up=bool(flags & IFF_UP),
        ))
    return links, False


def list_links(sock: socket.socket) -> list[Link]:
    """Every link of the namespace ``sock`` (an AF_NETLINK/NETLINK_ROUTE socket) was made in."""
    sock.sendall(dump_request())
    links: list[Link] = []
    done = False
    while not done:
        found, done = parse(sock.recv(65536))
        links.extend(found)
    return links
