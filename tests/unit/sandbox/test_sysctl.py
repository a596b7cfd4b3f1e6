from __future__ import annotations

import pytest

from sandbox import sysctl
from sandbox.errors import InvalidSysctl, SandboxError

CVE_2022_0811 = (
    "1024 65000'+'kernel.core_pattern=|/var/lib/containers/storage/overlay/x/diff/malicious.sh #"
)

ACCEPTED = [
    # key, value, normalised key
    ("net.ipv4.ip_local_port_range", "1024 65000", "net.ipv4.ip_local_port_range"),
    ("net.ipv4.ip_local_port_range", "1024\t65000", "net.ipv4.ip_local_port_range"),
    ("net.ipv4.ip_local_reserved_ports", "8080,30000-32767", "net.ipv4.ip_local_reserved_ports"),
    ("net.ipv4.ip_local_reserved_ports", "", "net.ipv4.ip_local_reserved_ports"),
    ("net.ipv4.tcp_congestion_control", "bbr", "net.ipv4.tcp_congestion_control"),
    ("net.ipv4.ping_group_range", "0 2147483647", "net.ipv4.ping_group_range"),
    ("net/ipv4/ip_forward", "1", "net.ipv4.ip_forward"),
    ("net/ipv4/conf/eth0.100/forwarding", "1", "net.ipv4.conf.eth0/100.forwarding"),
    ("net.ipv4.conf.eth0/100.forwarding", "1", "net.ipv4.conf.eth0/100.forwarding"),
    ("net.core.somaxconn", "1024", "net.core.somaxconn"),
    ("kernel.shm_rmid_forced", "1", "kernel.shm_rmid_forced"),
    ("kernel.shmmax", "68719476736", "kernel.shmmax"),
    ("kernel.shmall", "4294967296", "kernel.shmall"),
    ("kernel.shmmni", "4096", "kernel.shmmni"),
    ("kernel.msgmax", "65536", "kernel.msgmax"),
    ("kernel.msgmnb", "65536", "kernel.msgmnb"),
    ("kernel.msgmni", "32000", "kernel.msgmni"),
    ("kernel.sem", "250 32000 100 128", "kernel.sem"),
    ("kernel/sem", "250\t32000\t100\t128", "kernel.sem"),
    ("fs.mqueue.msg_max", "10", "fs.mqueue.msg_max"),
    ("fs/mqueue/queues_max", "256", "fs.mqueue.queues_max"),
]


@pytest.mark.parametrize(("key", "value", "normal"), ACCEPTED)
def test_accepted(key: str, value: str, normal: str) -> None:
    assert sysctl.validate({key: value}, host_network=False, host_ipc=False) == {normal: value}


REFUSED = [
    # key, value, why (matched against the message)
    ("net.ipv4.ip_local_port_range", CVE_2022_0811, "characters"),
    ("kernel.shm_rmid_forced", "1+kernel.core_pattern=|/tmp/x", "characters"),
    ("net.core.somaxconn", "1=2", "characters"),
    ("net.core.somaxconn", "1\nkernel.core_pattern=x", "characters"),
    ("net.core.somaxconn", "1\x00", "characters"),
    ("net.core.somaxconn", "1\r", "characters"),
    ("net.core.somaxconn", '"1"', "characters"),
    ("net.core.somaxconn", "'1'", "characters"),
    ("net.core.somaxconn", "1;reboot", "characters"),
    ("net.core.somaxconn", "$(id)", "characters"),
    ("net.core.somaxconn", "1\x1b[2J", "characters"),
    ("net.core.somaxconn", "1\u00a0", "characters"),
    ("net.core.somaxconn", "9" * 5000, "longer"),
    ("kernel.core_pattern", "|/tmp/x", "not namespaced"),
    ("kernel.hostname", "x", "not namespaced"),
    ("kernel.shm_something_new", "1", "not namespaced"),
    ("kernel.msgfoo", "1", "not namespaced"),
    ("vm.overcommit_memory", "1", "not namespaced"),
    ("fs.file-max", "1", "not namespaced"),
    ("kernel", "1", "not namespaced"),
    ("net..ipv4.ip_forward", "1", "malformed"),
    ("net/ipv4/../../kernel/core_pattern", "1", "malformed"),
    ("net.ipv4.ip_forward+kernel.core_pattern", "1", "malformed"),
    ("net.ipv4.ip_forward=1", "1", "malformed"),
    ("net.ipv4.ip forward", "1", "malformed"),
    ("Net.ipv4.ip_forward", "1", "malformed"),
    ("net.ipv4.ip_forward\n", "1", "malformed"),
    ("/net/ipv4/ip_forward", "1", "malformed"),
    ("net.ipv4.ip_forward.", "1", "malformed"),
    ("net.ipv4.'x'", "1", "malformed"),
    ("", "1", "malformed"),
    ("net." + "a" * 260, "1", "malformed"),
]


@pytest.mark.parametrize(("key", "value", "why"), REFUSED)
def test_refused(key: str, value: str, why: str) -> None:
    with pytest.raises(InvalidSysctl, match=why) as info:
        sysctl.validate({key: value}, host_network=False, host_ipc=False)
    assert isinstance(info.value, SandboxError) and isinstance(info.value, ValueError)
    if why != "malformed":  # the message names the key
        assert sysctl.normalize_key(key) in str(info.value)


@pytest.mark.parametrize(
    ("key", "host_network", "host_ipc", "ok"),
    [
        ("net.ipv4.ip_forward", True, False, False),
        ("net.ipv4.ip_forward", False, True, True),
        ("kernel.shmmax", False, True, False),
        ("kernel.sem", False, True, False),
        ("kernel.msgmax", False, True, False),
        ("fs.mqueue.msg_max", False, True, False),
        ("kernel.shmmax", True, False, True),
    ],
)
def test_host_namespaces(key: str, host_network: bool, host_ipc: bool, ok: bool) -> None:
    call = lambda: sysctl.validate({key: "1"}, host_network=host_network, host_ipc=host_ipc)  # noqa: E731
    if ok:
        assert call() == {key: "1"}
    else:
        with pytest.raises(InvalidSysctl, match=rf"{key}.*host"):
            call()


def test_same_key_in_both_forms() -> None:
    same = {"net.ipv4.ip_forward": "1", "net/ipv4/ip_forward": "1"}
    assert sysctl.validate(same, host_network=False, host_ipc=False) == {"net.ipv4.ip_forward": "1"}
    clash = {"net.ipv4.ip_forward": "1", "net/ipv4/ip_forward": "0"}
    with pytest.raises(InvalidSysctl, match="twice"):
        sysctl.validate(clash, host_network=False, host_ipc=False)


def test_empty_is_fine() -> None:
    assert sysctl.validate({}, host_network=True, host_ipc=True) == {}


def test_value_is_not_echoed() -> None:
    with pytest.raises(InvalidSysctl) as info:
        sysctl.validate(
            {"net.core.somaxconn": "1\x1b]0;pwned\x07"}, host_network=False, host_ipc=False
        )
    assert "\x1b" not in str(info.value)
