"""Pod egress NAT by pycri's one-rule-per-subnet masquerade (``masquerade_cidrs``): what a
server outside the node sees of a pod's connection."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cri.api import api_pb2
from sandbox import masquerade
from tests.e2e.helpers import Daemon, pod_config

pytestmark = pytest.mark.e2e

PORT = 8000
SERVER = f"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))
s.listen()
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    print(peer[0], flush=True)
    conn.close()
"""


@dataclass
class Outside:
    """A host beyond the node: a netns behind a veth, with a route back to the pod subnet (so
    an unmasqueraded connection works too, and shows the pod's own address)."""

    name: str
    host_ip: str
    ip: str
    server: subprocess.Popen[str]

    def seen_source_of(self, pod_netns: str) -> str:
        """Connect from the pod's netns; the source address the server saw."""
        subprocess.run(
            ["nsenter", f"--net={pod_netns}", sys.executable, "-c",
             f"import socket; socket.create_connection(({self.ip!r}, {PORT}), timeout=10)"],
            check=True, timeout=30)
        assert self.server.stdout is not None
        return self.server.stdout.readline().strip()


@pytest.fixture
def outside() -> Iterator[Outside]:
    tag = f"{random.getrandbits(24):06x}"
    name, link = f"e2e-out-{tag}", f"pco{tag}"
    third = random.randint(0, 255)
    host_ip, ip = f"198.18.{third}.1", f"198.18.{third}.2"
    sh = [
        f"ip netns add {name}",
        f"ip link add {link} type veth peer name eth0 netns {name}",
        f"ip addr add {host_ip}/30 dev {link}",
        f"ip link set {link} up",
        f"ip -n {name} addr add {ip}/30 dev eth0",
        f"ip -n {name} link set eth0 up",
        f"ip -n {name} link set lo up",
    ]
    try:
        for cmd in sh:
            subprocess.run(cmd.split(), check=True)
        server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        try:
            yield Outside(name, host_ip, ip, server)
        finally:
            server.kill()
            server.wait()
            server.stdout.close()
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _nat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True,
                          check=False)


def test_pod_traffic_leaves_with_the_node_address(outside: Outside) -> None:
    chain_was_there = _nat("-S", masquerade.CHAIN).returncode == 0
    d = Daemon.new("masq")
    without_nat = d.config_path.read_text()
    with_nat = without_nat.replace(
        "[pycri.network]\n", f'[pycri.network]\nmasquerade_cidrs = ["{d.subnet}"]\n')
    d.config_path.write_text(with_nat)
    owner = str(d.root)
    conflist = d.conf_dir / "10-e2e.conflist"
    conf = json.loads(conflist.read_text())
    conf["plugins"][0]["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]  # like the default network
    conflist.write_text(json.dumps(conf))
    subprocess.run(["ip", "-n", outside.name, "route", "add", d.subnet, "via", outside.host_ip],
                   check=True)
    # The node forwards between the bridge and the outside link whatever its FORWARD policy
    # (a node with Docker has DROP).
    forward = [["FORWARD", "-s", d.subnet, "-j", "ACCEPT"], ["FORWARD", "-d", d.subnet, "-j", "ACCEPT"]]
    for rule in forward:
        subprocess.run(["iptables", "-w", "-I", *rule], check=True)
    try:
        d.start()
        rt = d.runtime()
        pod_id = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config()),
                                  timeout=60).pod_sandbox_id
        st = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id,
                                                                 verbose=True), timeout=10)
        pod_ip = st.status.network.ip
        pod_netns = json.loads(st.info["info"])["netNamespacePath"]

        assert outside.seen_source_of(pod_netns) == outside.host_ip
        # The rule is what does it: without it the outside host sees the pod's own address.
        masquerade.remove([d.subnet], owner)
        assert outside.seen_source_of(pod_netns) == pod_ip
        # A restart puts the rule back (and only once).
        d.restart(kill=False)
        assert outside.seen_source_of(pod_netns) == outside.host_ip
        assert _nat("-S", masquerade.CHAIN).stdout.count(f"-s {d.subnet} ") == 1
        # Restarted with the subnet taken out of its config, the daemon deletes the rule.
        d.config_path.write_text(without_nat)
        d.restart(kill=False)
        assert f"-s {d.subnet} " not in _nat("-S", masquerade.CHAIN).stdout
        assert outside.seen_source_of(pod_netns) == pod_ip

        rt = d.runtime()
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    finally:
        for rule in forward:
            subprocess.run(["iptables", "-w", "-D", *rule], check=False)
        masquerade.remove([d.subnet], owner)
        d.cleanup()
        if not chain_was_there:  # leave the node's nat table as it was
            _nat("-D", *masquerade.jump_rule())
            _nat("-X", masquerade.CHAIN)
