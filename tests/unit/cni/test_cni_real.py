"""ADD / CHECK / DEL against the real bridge + host-local + portmap plugins (root only).

Traffic is limited to the pod's freshly made test subnet on a private bridge."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni import k8s
from cni.config import load_dir
from cni.network import CNINetwork

PLUGIN_DIR = Path("/usr/lib/cni")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (PLUGIN_DIR / "bridge").exists() or shutil.which("ip") is None,
    reason="needs root, the ip tool and the containernetworking plugins in /usr/lib/cni",
)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Path]:
    name = f"pycri-cnitest-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def ping(ip: str) -> bool:
    """One ICMP echo to ip (the ping binary when present, else a raw socket)."""
    if shutil.which("ping"):
        return subprocess.run(["ping", "-c1", "-W1", ip], capture_output=True, timeout=10).returncode == 0
    ident = random.randint(0, 0xFFFF)
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"pycri-cnitest"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(1.0)
        sock.sendto(packet, (ip, 0))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if addr[0] == ip and typ == 0 and rid == ident:
                return True
    return False


def test_bridge_add_check_del_and_del_after_netns_removed(tmp_path: Path, netns: Path) -> None:
    bridge = f"pcni{secrets.token_hex(2)}"
    subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
    data_dir = tmp_path / "ipam"
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-test.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": "pycri-cnitest",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": str(subnet)}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }))
    loaded = load_dir(conf_dir)
    assert loaded.config is not None, loaded.reasons
    net = CNINetwork(loaded.config, [PLUGIN_DIR], tmp_path / "cache", timeout=60)
    cid = secrets.token_hex(16)
    args = k8s.cni_args(namespace="default", name="cnitest", infra_id=cid, uid="u-1")
    caps = k8s.capability_args(port_mappings=[], dns_servers=[], dns_searches=[], dns_options=[],
                               ingress_bandwidth=None, egress_bandwidth=None, cgroup_path="")
    lease_dir = data_dir / "pycri-cnitest"

    def leases() -> list[str]:
        if not lease_dir.exists():
            return []
        return [p.name for p in lease_dir.iterdir() if p.name[0].isdigit()]

    second_ns = Path("/run/netns") / f"pycri-cnitest-{secrets.token_hex(4)}"
    try:
        result = asyncio.run(net.add(cid, netns, "eth0", args=args, capability_args=caps))
        ips = result.pod_ips("eth0")
        assert len(ips) == 1 and ips[0] in subnet
        assert leases() == [str(ips[0])]
        assert ping(str(ips[0]))
        assert net.cached_result(cid, "eth0") == result.raw
        asyncio.run(net.check(cid, netns, "eth0", args=args, capability_args=caps))

        asyncio.run(net.delete(cid, netns, "eth0", args=args, capability_args=caps))
        assert leases() == []
        assert net.cached_result(cid, "eth0") is None
        asyncio.run(net.delete(cid, netns, "eth0", args=args, capability_args=caps))  # idempotent

        # ADD into a second netns, delete the netns, then DEL: the lease must still go.
        _run("ip", "netns", "add", second_ns.name)
        cid2 = secrets.token_hex(16)
        result2 = asyncio.run(net.add(cid2, second_ns, "eth0", args=args, capability_args=caps))
        assert [str(ip) for ip in result2.pod_ips("eth0")] == leases()
        _run("ip", "netns", "del", second_ns.name)
        assert not second_ns.exists()
        # The conf file is gone too: DEL from the cached config.
        (conf_dir / "10-test.conflist").unlink()
        cached = CNINetwork.from_cache(tmp_path / "cache", cid2, "eth0", [PLUGIN_DIR], timeout=60)
        assert cached is not None and cached.name == "pycri-cnitest"
        asyncio.run(cached.delete(cid2, second_ns, "eth0", args=args, capability_args=caps))
        assert leases() == []
        assert cached.cached_result(cid2, "eth0") is None
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["ip", "netns", "del", second_ns.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)
