from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from sandbox import masquerade
from sandbox.masquerade import CHAIN, MasqueradeError


def _nat_rules(run: masquerade.Runner, binary: str = "iptables") -> list[str]:
    out = run([binary, "-w", "-t", "nat", "-S"])
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if CHAIN in line]


@pytest.fixture
def in_netns() -> Iterator[masquerade.Runner]:
    """A runner whose iptables act on a throwaway network namespace's tables."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"pycri-masq-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True,
                              text=True, check=False)

    try:
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


NODE = "/var/lib/pycri"  # the owner: a daemon's state root
TEST = "/tmp/pycri-e2e-x"  # a second daemon on the same node


def _subnets(run: masquerade.Runner, binary: str = "iptables") -> list[tuple[str, str]]:
    """(subnet, comment) of every rule in the chain, in order."""
    out = []
    for rule in _nat_rules(run, binary):
        words = shlex.split(rule)
        if words[:2] == ["-A", CHAIN]:
            out.append((words[words.index("-s") + 1], words[words.index("--comment") + 1]))
    return out


def test_one_rule_per_subnet_behind_one_jump(in_netns: masquerade.Runner) -> None:
    masquerade.ensure(["10.85.0.0/16", "10.86.0.0/24"], NODE, run=in_netns)
    rules = _nat_rules(in_netns)
    assert rules[0] == f"-N {CHAIN}"
    jumps = [r for r in rules if r.startswith("-A POSTROUTING")]
    assert len(jumps) == 1 and jumps[0].endswith(f"-j {CHAIN}")
    masq = [r for r in rules if r.startswith(f"-A {CHAIN}")]
    assert len(masq) == 2
    assert masq[0].startswith(f"-A {CHAIN} -s 10.85.0.0/16 ! -d 10.85.0.0/16")
    assert masq[1].startswith(f"-A {CHAIN} -s 10.86.0.0/24 ! -d 10.86.0.0/24")
    assert all(r.endswith("-j MASQUERADE") for r in masq)
    assert {c for _, c in _subnets(in_netns)} == {
        "pycri /var/lib/pycri: pod traffic leaving its subnet"}


def test_ensure_again_adds_only_what_is_missing(in_netns: masquerade.Runner) -> None:
    masquerade.ensure(["10.85.0.0/16"], NODE, run=in_netns)
    masquerade.ensure(["10.85.0.0/16"], NODE, run=in_netns)  # a restart
    masquerade.ensure(["10.87.0.0/16"], TEST, run=in_netns)  # a second daemon on the node
    assert [n for n, _ in _subnets(in_netns)] == ["10.85.0.0/16", "10.87.0.0/16"]
    assert len([r for r in _nat_rules(in_netns) if r.startswith("-A POSTROUTING")]) == 1
    masquerade.remove(["10.85.0.0/16"], NODE, run=in_netns)
    assert [n for n, _ in _subnets(in_netns)] == ["10.87.0.0/16"]


def test_a_subnet_taken_out_of_the_config_loses_its_rule(in_netns: masquerade.Runner) -> None:
    masquerade.ensure(["10.85.0.0/16", "10.86.0.0/24"], NODE, run=in_netns)
    masquerade.ensure(["10.87.0.0/16"], TEST, run=in_netns)
    masquerade.ensure(["10.86.0.0/24"], NODE, run=in_netns)  # restarted without 10.85
    assert [n for n, _ in _subnets(in_netns)] == ["10.86.0.0/24", "10.87.0.0/16"]
    masquerade.ensure([], NODE, run=in_netns)  # without any
    assert [n for n, _ in _subnets(in_netns)] == ["10.87.0.0/16"]  # the other daemon's stays
    masquerade.ensure([], TEST, run=in_netns)
    assert _subnets(in_netns) == []


def test_nothing_configured_needs_no_chain_and_no_iptables(in_netns: masquerade.Runner) -> None:
    masquerade.ensure([], NODE, run=in_netns)
    assert _nat_rules(in_netns) == []

    def missing(argv: list[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    masquerade.ensure([], NODE, run=missing)


def test_a_long_owner_is_named_by_its_hash(in_netns: masquerade.Runner) -> None:
    owner = "/srv/" + "x" * 300
    masquerade.ensure(["10.85.0.0/16"], owner, run=in_netns)
    [(net, text)] = _subnets(in_netns)
    assert net == "10.85.0.0/16"
    assert text.startswith("pycri sha256:") and len(text.encode()) < 256
    masquerade.ensure([], owner, run=in_netns)
    assert _subnets(in_netns) == []


def test_ipv6_subnets_go_to_ip6tables(in_netns: masquerade.Runner) -> None:
    masquerade.ensure(["fd00:85::/64"], NODE, run=in_netns)
    assert [n for n, _ in _subnets(in_netns, "ip6tables")] == ["fd00:85::/64"]
    assert _nat_rules(in_netns) == []
    masquerade.ensure(["10.85.0.0/16"], NODE, run=in_netns)
    assert _subnets(in_netns, "ip6tables") == []


def test_a_failing_iptables_is_reported_with_its_message() -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 4, "", "iptables: Permission denied.\n")

    with pytest.raises(MasqueradeError, match=f"-N {CHAIN}: iptables: Permission denied"):
        masquerade.ensure(["10.85.0.0/16"], NODE, run=run)


def test_a_missing_iptables_is_reported() -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(MasqueradeError, match=r"iptables: .*No such file"):
        masquerade.ensure(["10.85.0.0/16"], NODE, run=run)


def test_subnet_rules_use_the_network_address() -> None:
    with pytest.raises(ValueError):
        masquerade.subnet_rule("10.85.0.1/16", NODE)  # host bits set: a typo, not a subnet
    assert masquerade.subnet_rule("10.85.0.0/16", NODE)[1:5] == [
        "-s", "10.85.0.0/16", "!", "-d"]
