"""Per-interface network counters of a pod, read from /proc/<pid>/net/dev.

``/proc/<pid>/net`` shows the network namespace of process ``pid``, so the pod's infra process
gives the pod's view without entering its namespace (setns would move a daemon thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["IfaceStats", "default_interface", "parse_net_dev", "read_net_dev"]

# Column positions after "<name>:", fixed since Linux 2.x: eight receive counters (bytes packets
# errs drop fifo frame compressed multicast) then eight transmit ones.
_RX_BYTES, _RX_PACKETS, _RX_ERRS, _RX_DROP = 0, 1, 2, 3
_TX_BYTES, _TX_PACKETS, _TX_ERRS, _TX_DROP = 8, 9, 10, 11
_COLUMNS = 16


@dataclass(frozen=True)
class IfaceStats:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int
    # Defaulted, so code that builds the first four counters alone keeps working.
    rx_packets: int = 0
    rx_dropped: int = 0
    tx_packets: int = 0
    tx_dropped: int = 0


def parse_net_dev(text: str) -> dict[str, IfaceStats]:
    """Parse the content of a ``net/dev`` file. Lines that do not fit the format are skipped."""
    out: dict[str, IfaceStats] = {}
    for line in text.splitlines():
        # Interface names cannot contain ':' (the kernel refuses them), so the first one ends
        # the name; old kernels print no space between it and a wide first counter.
        name, sep, rest = line.partition(":")
        name = name.strip()
        fields = rest.split()
        if not sep or not name or len(fields) < _COLUMNS:
            continue  # the two header lines
        try:
            numbers = [int(f) for f in fields[:_COLUMNS]]
        except ValueError:
            continue
        out[name] = IfaceStats(
            name=name,
            rx_bytes=numbers[_RX_BYTES],
            rx_errors=numbers[_RX_ERRS],
            tx_bytes=numbers[_TX_BYTES],
            tx_errors=numbers[_TX_ERRS],
            rx_packets=numbers[_RX_PACKETS],
            rx_dropped=numbers[_RX_DROP],
            tx_packets=numbers[_TX_PACKETS],
            tx_dropped=numbers[_TX_DROP],
        )
    return out


def read_net_dev(pid: int) -> dict[str, IfaceStats]:
    """Counters of every interface (``lo`` included) in the network namespace of ``pid``.

    Raises ProcessLookupError when the process is gone or is a zombie (its namespaces are
    already released, so /proc shows no net directory for it).
    """
    try:
        # Interface names may hold any byte but '/', ':' and spaces; keep odd ones readable.
        with open(f"/proc/{pid}/net/dev", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(f"process {pid} is gone: no /proc/{pid}/net/dev") from exc
    return parse_net_dev(text)


def default_interface(stats: Mapping[str, IfaceStats], preferred: str = "eth0") -> IfaceStats | None:
    """The pod's main interface: ``preferred`` (CNI's usual CNI_IFNAME) when present, else the
    first other non-loopback one by name, else None."""
    if preferred in stats:
        return stats[preferred]
    others = sorted(name for name in stats if name != "lo")
    return stats[others[0]] if others else None
