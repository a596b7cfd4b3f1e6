from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from cri.inspect import netlink
from cri.inspect.netinfo import host_end
from tests.unit.cri.inspect.fakes import write_files


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def newlink(index: int, name: str, *, link: int | None = None, kind: str = "",
            mac: bytes = b"", up: bool = True, seq: int = 1) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, 1 if up else 0, 0)
    body += attr(netlink.IFLA_IFNAME, name.encode() + b"\0")
    if mac:
        body += attr(netlink.IFLA_ADDRESS, mac)
    if link is not None:
        body += attr(netlink.IFLA_LINK, struct.pack("=i", link))
    if kind:
        # Nested, with NLA_F_NESTED set as the kernel sends it.
        body += attr(netlink.IFLA_LINKINFO | 0x8000,
                     attr(netlink.IFLA_INFO_KIND, kind.encode() + b"\0"))
    return struct.pack("=IHHII", 16 + len(body), netlink.RTM_NEWLINK, 2, seq, 0) + body


def done() -> bytes:
    return struct.pack("=IHHIIi", 20, netlink.NLMSG_DONE, 2, 1, 0, 0)


def test_dump_request_is_an_rtm_getlink_dump() -> None:
    req = netlink.dump_request(7)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, kind, seq, pid) == (len(req), netlink.RTM_GETLINK, 7, 0)
    assert flags & netlink.NLM_F_DUMP == netlink.NLM_F_DUMP and flags & netlink.NLM_F_REQUEST


def test_links_of_a_pod_namespace_with_the_veth_peer() -> None:
    data = (newlink(1, "lo", up=True)
            + newlink(2, "eth0", link=9, kind="veth", mac=bytes.fromhex("0a580a000005")))
    links, finished = netlink.parse(data)
    assert not finished
    assert links == [
        netlink.Link(1, "lo", "", 0, "", True),
        netlink.Link(2, "eth0", "veth", 9, "0a:58:0a:00:00:05", True),
    ]
    assert netlink.parse(newlink(3, "net1", up=False) + done()) == (
        [netlink.Link(3, "net1", "", 0, "", False)], True)


def test_an_error_answer_raises() -> None:
    err = struct.pack("=IHHIIi", 20, netlink.NLMSG_ERROR, 0, 1, 0, -1)
    with pytest.raises(netlink.NetlinkError, match="errno 1"):
        netlink.parse(err)
    with pytest.raises(netlink.NetlinkError, match="length"):
        netlink.parse(struct.pack("=IHHII", 4, netlink.RTM_NEWLINK, 0, 1, 0))


def test_list_links_reads_until_done() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        theirs.send(newlink(1, "lo"))
        theirs.send(newlink(2, "eth0", link=9) + done())
        assert [link.name for link in netlink.list_links(ours)] == ["lo", "eth0"]
        assert theirs.recv(100) == netlink.dump_request()


def fake_dev(sys_net: Path, name: str, index: int, iflink: int, master: str = "") -> None:
    write_files(sys_net / name, {"ifindex": str(index), "iflink": str(iflink)})
    if master:
        os.symlink(f"../{master}", sys_net / name / "master")


def test_the_host_end_is_the_veth_whose_peer_is_the_pods(tmp_path: Path) -> None:
    fake_dev(tmp_path, "eth0", 2, 2)  # the host's own eth0: same index as the pod's, not it
    fake_dev(tmp_path, "cni0", 5, 5)
    fake_dev(tmp_path, "vethother", 8, 3, master="cni0")
    fake_dev(tmp_path, "veth1234", 9, 2, master="cni0")
    assert host_end(2, 9, tmp_path) == ("veth1234", "cni0")
    assert host_end(2, 8, tmp_path) == ("", "")  # 8's peer is another pod's interface
    fake_dev(tmp_path, "vethlone", 11, 4)
    assert host_end(4, 11, tmp_path) == ("vethlone", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_real_namespace_its_links_and_the_host_end_of_its_veth(tmp_path: Path) -> None:
    from cri.inspect.netinfo import pod_interfaces
    from sandbox import netns

    run_dir = tmp_path / "netns"
    pin = netns.create(f"inspect-{os.getpid()}", run_dir)
    host_name = f"pcri{os.getpid() % 100000:05d}"
    try:
        # The pair is made inside the namespace and one end moved to ours, as CNI's bridge does.
        ns = ["nsenter", f"--net={pin}", "ip", "link"]
        subprocess.run([*ns, "add", "eth0", "type", "veth", "peer", "name", host_name],
                       check=True)
        subprocess.run([*ns, "set", host_name, "netns", str(os.getpid())], check=True)
        (eth0,) = pod_interfaces(str(pin))
        assert (eth0.name, eth0.kind, eth0.up, eth0.bridge) == ("eth0", "veth", False, "")
        assert eth0.host_peer == host_name
        assert eth0.host_peer_index == socket.if_nametoindex(host_name)
        assert Path(f"/proc/self/task/{threading.get_native_id()}/ns/net").stat().st_ino \
            == Path("/proc/self/ns/net").stat().st_ino
    finally:
        subprocess.run(["ip", "link", "del", host_name], capture_output=True, check=False)
        netns.remove(pin)
        # create() made the run dir a shared mount of its own.
        subprocess.run(["umount", "-l", str(run_dir)], check=True)
