"""Node-wide masquerading of pod traffic that leaves a pod subnet.

The bridge plugin's ``ipMasq`` gives every pod a nat chain of its own: three iptables changes
at CNI ADD and five at DEL, each a whole-table round trip with iptables-nft (about 30 ms of a
pod's teardown here). One rule per subnet does the same for every pod: packets from the subnet
to anywhere outside it leave with the node's address. The rules live in pycri's own chain,
jumped to from nat POSTROUTING, so an operator sees them in one place
(``iptables -t nat -S PYCRI-MASQ``).

``ensure`` only ever adds what is missing: several daemons (a node's and a test's) can share
the chain, and a restart changes nothing. A subnet taken out of the config keeps its rule until
it is deleted by hand (``iptables -t nat -D PYCRI-MASQ ...``) or the node reboots.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable, Sequence

CHAIN = "PYCRI-MASQ"
COMMENT = "pycri: pod traffic leaving its subnet"

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


class MasqueradeError(Exception):
    pass


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def tool(cidr: str) -> str:
    return "ip6tables" if ipaddress.ip_network(cidr).version == 6 else "iptables"


def jump_rule() -> list[str]:
    return ["POSTROUTING", "-m", "comment", "--comment", COMMENT, "-j", CHAIN]


def subnet_rule(cidr: str) -> list[str]:
    """Masquerade what goes from ``cidr`` to anywhere outside it (pod-to-pod traffic on the
    bridge keeps its addresses)."""
    net = str(ipaddress.ip_network(cidr))
    return [CHAIN, "-s", net, "!", "-d", net, "-m", "comment", "--comment", COMMENT,
            "-j", "MASQUERADE"]


def ensure(cidrs: Sequence[str], run: Runner = _run) -> None:
    """The chain, the jump to it and one rule per subnet exist in the nat table (idempotent)."""
    by_tool: dict[str, list[str]] = {}
    for cidr in cidrs:
        by_tool.setdefault(tool(cidr), []).append(cidr)
    for binary, nets in by_tool.items():
        def ipt(*args: str, binary: str = binary) -> subprocess.CompletedProcess[str]:
            try:
                return run([binary, "-w", "-t", "nat", *args])
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MasqueradeError(f"{binary}: {exc}") from exc

        listed = ipt("-S", CHAIN)
        if listed.returncode != 0:
            made = ipt("-N", CHAIN)
            if made.returncode != 0 and ipt("-S", CHAIN).returncode != 0:  # not a lost race
                raise MasqueradeError(f"{binary} -t nat -N {CHAIN}: {made.stderr.strip()}")
        for rule in (jump_rule(), *(subnet_rule(n) for n in nets)):
            if ipt("-C", *rule).returncode == 0:
                continue
            added = ipt("-A", *rule)
            if added.returncode != 0:
                raise MasqueradeError(
                    f"{binary} -t nat -A {' '.join(rule)}: {added.stderr.strip()}")


def remove(cidrs: Sequence[str], run: Runner = _run) -> None:
    """Delete the subnets' rules (for tests and operators; the chain and jump stay)."""
    for cidr in cidrs:
        run([tool(cidr), "-w", "-t", "nat", "-D", *subnet_rule(cidr)])
