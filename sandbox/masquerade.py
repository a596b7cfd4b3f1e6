"""Node-wide masquerading of pod traffic that leaves a pod subnet.

The bridge plugin's ``ipMasq`` gives every pod a nat chain of its own: three iptables changes
at CNI ADD and five at DEL, each a whole-table round trip with iptables-nft (about 30 ms of a
pod's teardown here). One rule per subnet does the same for every pod: packets from the subnet
to anywhere outside it leave with the node's address. The rules live in pycri's own chain,
jumped to from nat POSTROUTING, so an operator sees them in one place
(``iptables -t nat -S PYCRI-MASQ``).

Each subnet rule names the daemon that owns it (its state root) in its comment, so several
daemons (a node's and a test's) can share the chain. ``ensure`` adds what is missing and deletes
the rules of its own that name a subnet no longer configured: a restart with the same config
changes nothing, one without a subnet takes its NAT away, and other daemons' rules are kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
import subprocess
from collections.abc import Callable, Sequence

CHAIN = "PYCRI-MASQ"
JUMP_COMMENT = "pycri: pod traffic leaving its subnet"
TOOLS = ("iptables", "ip6tables")

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


class MasqueradeError(Exception):
    pass


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def tool(cidr: str) -> str:
    return "ip6tables" if ipaddress.ip_network(cidr).version == 6 else "iptables"


def jump_rule() -> list[str]:
    return ["POSTROUTING", "-m", "comment", "--comment", JUMP_COMMENT, "-j", CHAIN]


def comment(owner: str) -> str:
    """The comment of an owner's subnet rules (iptables keeps at most 255 bytes of it)."""
    if len(owner.encode()) > 200:
        owner = "sha256:" + hashlib.sha256(owner.encode()).hexdigest()[:16]
    return f"pycri {owner}: pod traffic leaving its subnet"


def subnet_rule(cidr: str, owner: str) -> list[str]:
    """Masquerade what goes from ``cidr`` to anywhere outside it (pod-to-pod traffic on the
    bridge keeps its addresses)."""
    net = str(ipaddress.ip_network(cidr))
    return [CHAIN, "-s", net, "!", "-d", net, "-m", "comment", "--comment", comment(owner),
            "-j", "MASQUERADE"]


def _owned(listing: str, owner: str) -> dict[str, list[str]]:
    """The subnet rules of ``owner`` in an ``iptables -S CHAIN`` listing: subnet -> the rule's
    arguments after ``-A``."""
    mine = comment(owner)
    found: dict[str, list[str]] = {}
    for line in listing.splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:2] != ["-A", CHAIN] or "-s" not in words[:-1] or "--comment" not in words[:-1]:
            continue
        if words[words.index("--comment") + 1] == mine:
            found[words[words.index("-s") + 1]] = words[1:]
    return found


def ensure(cidrs: Sequence[str], owner: str, run: Runner = _run) -> None:
    """The chain, the jump to it and one rule per subnet of ``cidrs`` exist in the nat table,
    and ``owner`` has no rule for another subnet (idempotent).

    With no subnet for a tool, that tool is only asked for stale rules to delete: a node
    without ip6tables, or without any iptables when nothing is configured, is no error.
    """
    for binary in TOOLS:
        nets = [str(ipaddress.ip_network(c)) for c in cidrs if tool(c) == binary]

        def ipt(*args: str, binary: str = binary) -> subprocess.CompletedProcess[str]:
            try:
                return run([binary, "-w", "-t", "nat", *args])
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MasqueradeError(f"{binary}: {exc}") from exc

        try:
            listed = ipt("-S", CHAIN)
        except MasqueradeError:
            if nets:
                raise
            continue
        if listed.returncode != 0:
            if not nets:
                continue  # no chain: nothing of ours to delete
            made = ipt("-N", CHAIN)
            if made.returncode != 0 and ipt("-S", CHAIN).returncode != 0:  # not a lost race
                raise MasqueradeError(f"{binary} -t nat -N {CHAIN}: {made.stderr.strip()}")
        owned = _owned(listed.stdout, owner)  # the listing says which rules we have already
        changes = [("-D", rule) for net, rule in owned.items() if net not in nets]
        if nets and ipt("-C", *jump_rule()).returncode != 0:
            changes.append(("-A", jump_rule()))
        changes += [("-A", subnet_rule(n, owner)) for n in nets if n not in owned]
        for op, rule in changes:
            done = ipt(op, *rule)
            if done.returncode != 0:
                raise MasqueradeError(
                    f"{binary} -t nat {op} {shlex.join(rule)}: {done.stderr.strip()}")


def remove(cidrs: Sequence[str], owner: str, run: Runner = _run) -> None:
    """Delete the subnets' rules of ``owner`` (for tests; the chain and jump stay)."""
    for cidr in cidrs:
        run([tool(cidr), "-w", "-t", "nat", "-D", *subnet_rule(cidr, owner)])
