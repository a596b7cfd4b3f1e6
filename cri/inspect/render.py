"""The human view of an inspection: a header for the pod, then one table of namespaces and one
of cgroup limits, a row per process. ``--json`` prints the report itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cri.inspect.namespaces import TYPES

_UNITS = (("Ei", 1 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20),
          ("Ki", 1 << 10))
LIMITS_LEGEND = ("*: an ancestor cgroup (the pod's, a QoS class's) holds it below its own "
                 "limit; --json has both")
LEGEND = ("shared: the infra's namespace; host: the node's (this command's); a number: a "
          "namespace of the process's own (its inode)")


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def table(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; the last one is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
            if len(r) > 1 else r[0] for r in rows]


def size(value: Any) -> str:
    """Bytes in the largest binary unit that divides them exactly (as the kubelet's 64Mi)."""
    if value is None:
        return "-"
    if not isinstance(value, int) or value == 0:
        return str(value)
    for unit, factor in _UNITS:
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def _label(proc: dict[str, Any]) -> str:
    return f"{proc['name'] if proc['role'] == 'container' else 'infra'} {proc['id'][:12]}"


def _state(proc: dict[str, Any]) -> str:
    if not proc["running"]:
        return "not running"
    # A created container's init is alive, waiting for StartContainer to let it exec.
    return "created" if proc["recorded_state"] == "created" else "running"


def _ns_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if entry["sharing"] in ("shared", "host"):
        return str(entry["sharing"])
    return str(entry["inode"])  # the infra's own ("pod") or a container's "private" one


def _limits_cells(cgroup: dict[str, Any] | None) -> list[str]:
    if cgroup is None:
        return ["-"] * 6
    lim, eff = cgroup["limits"], cgroup["effective"]

    def cell(keys: tuple[str, ...], show: Callable[[dict[str, Any]], str]) -> str:
        # The effective value, starred where an ancestor holds the cgroup below its own.
        inherited = any(eff[k] != lim[k] for k in keys)
        return show(eff) + ("*" if inherited else "")

    weight = lim["cpu_weight"] if lim["cpu_weight"] is not None else lim["cpu_shares"]
    return [cell(("memory",), lambda v: size(v["memory"])),
            cell(("swap",), lambda v: size(v["swap"])),
            cell(("cpu_quota", "cpu_period"),
                 lambda v: f"{_plain(v['cpu_quota'])}/{_plain(v['cpu_period'])}"),
            _plain(weight), cell(("pids",), lambda v: _plain(v["pids"])), str(cgroup["path"])]


def _network(pod: dict[str, Any]) -> list[str]:
    if pod["host_network"]:
        return ["network    host network"]
    lines = [f"network    netns {pod['netns']}, IPs {', '.join(pod['ips']) or '-'}"]
    if pod["network_error"]:
        lines.append(f"           {pod['network_error']}")
    for i in pod["interfaces"] or []:
        peer = (f"host veth {i['host_peer']} (ifindex {i['host_peer_index']})"
                + (f" on bridge {i['bridge']}" if i["bridge"] else "")
                if i["host_peer"] else "no host veth")
        lines.append(f"           {i['name']} (ifindex {i['index']}, {i['mac'] or 'no mac'}, "
                     f"{'up' if i['up'] else 'down'}) <-> {peer}")
    return lines


def human(report: dict[str, Any]) -> str:
    pod = report["pod"]
    procs = report["processes"]
    out = [f"pod        {pod['namespace']}/{pod['name']} {pod['id']} ({pod['state']})",
           *_network(pod), ""]
    ns_rows = [["PROCESS", "PID", "STATE", *(t.upper() for t in TYPES)]]
    for p in procs:
        ns = p["namespaces"] or {}
        ns_rows.append([_label(p), _plain(p["pid"]), _state(p),
                        *(_ns_cell(ns.get(t)) for t in TYPES)])
    out += [*table(ns_rows), LEGEND, ""]
    v1 = any(p["cgroup"] and p["cgroup"]["version"] == 1 for p in procs)
    cg_rows = [["PROCESS", "MEMORY", "SWAP", "CPU QUOTA/PERIOD",
                "CPU SHARES" if v1 else "CPU WEIGHT", "PIDS", "CGROUP"]]
    cg_rows += [[_label(p), *_limits_cells(p["cgroup"])] for p in procs]
    out += [*table(cg_rows), LIMITS_LEGEND]
    return "\n".join(line.rstrip() for line in out) + "\n"
