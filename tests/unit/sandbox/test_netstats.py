from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from sandbox.netstats import IfaceStats, default_interface, parse_net_dev, read_net_dev

# As Linux prints it; the old-kernel "eth1:4294967296" line has no space after the colon.
SAMPLE = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 167504252    4319    7    1    0     0          0         0   226973    2751    3    0    0     0       0          0
  eth1:4294967296 12 0 0 0 0 0 0 18446744073709551615 1 5 6 0 0 0 0
 bad0: 1 2 3
"""  # noqa: E501 (the kernel's layout, verbatim)


def test_parse_net_dev() -> None:
    stats = parse_net_dev(SAMPLE)
    assert stats == {
        "lo": IfaceStats("lo", rx_bytes=3193, rx_errors=0, tx_bytes=3193, tx_errors=0,
                         rx_packets=29, rx_dropped=0, tx_packets=29, tx_dropped=0),
        "eth0": IfaceStats("eth0", rx_bytes=167504252, rx_errors=7, tx_bytes=226973, tx_errors=3,
                           rx_packets=4319, rx_dropped=1, tx_packets=2751, tx_dropped=0),
        "eth1": IfaceStats("eth1", rx_bytes=4294967296, rx_errors=0, tx_bytes=2**64 - 1, tx_errors=5,
                           rx_packets=12, rx_dropped=0, tx_packets=1, tx_dropped=6),
    }
    assert parse_net_dev("") == {}


def test_default_interface_prefers_eth0_then_the_first_other_non_loopback() -> None:
    stats = parse_net_dev(SAMPLE)
    assert default_interface(stats) == stats["eth0"]
    assert default_interface(stats, preferred="eth1") == stats["eth1"]
    del stats["eth0"]
    assert default_interface(stats) == stats["eth1"]
    assert default_interface({"lo": stats["lo"]}) is None
    assert default_interface({}) is None


def test_read_net_dev_of_this_process_sees_loopback_traffic() -> None:
    before = read_net_dev(os.getpid())["lo"]
    payload = b"x" * 4000
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        tx.sendto(payload, rx.getsockname())
        assert rx.recv(len(payload)) == payload
    after = read_net_dev(os.getpid())["lo"]
    # Other loopback traffic may add to it; counters never go down.
    assert after.rx_bytes - before.rx_bytes >= len(payload)
    assert after.tx_bytes - before.tx_bytes >= len(payload)


def test_read_net_dev_of_a_gone_process() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    with pytest.raises(ProcessLookupError):
        read_net_dev(pid_max + 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="a new network namespace needs root")
def test_read_net_dev_shows_the_namespace_of_the_process() -> None:
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "echo ready; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        # unshare execs sh in place, so the pid is the namespace's only process.
        assert read_net_dev(proc.pid) == {"lo": IfaceStats("lo", 0, 0, 0, 0)}
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
