"""Linux resources between NRI and the OCI spec: what a plugin is shown (the spec's
linux.resources as NRI LinuxResources) and what it asks for (NRI fields merged into the
spec's dict, which `runc create` or `runc update` then applies).

NRI marks each optional value with a wrapper message, so "unset" and 0 differ: only fields a
plugin set are merged. Block I/O and RDT classes name host configuration pycri does not have,
so asking for one is refused rather than dropped.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from cri.api import api_pb2
from cri.nri.api import api_pb2 as nri

Spec = dict[str, Any]

# (OCI key, NRI field) of linux.resources.memory and .cpu; NRI wraps each in an Optional*.
_MEMORY = (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"),
           ("kernel", "kernel"), ("kernelTCP", "kernel_tcp"), ("swappiness", "swappiness"),
           ("disableOOMKiller", "disable_oom_killer"), ("useHierarchy", "use_hierarchy"))
_CPU = (("shares", "shares"), ("quota", "quota"), ("period", "period"),
        ("realtimeRuntime", "realtime_runtime"), ("realtimePeriod", "realtime_period"))


class UnsupportedResource(ValueError):
    pass


def has(message: Message, field: str) -> bool:
    """HasField by a field name held in a variable (the stubs type it per message)."""
    return message.HasField(field)


def from_oci(res: Spec) -> nri.LinuxResources:
    out = nri.LinuxResources()
    memory = res.get("memory") or {}
    for key, field in _MEMORY:
        if key in memory:
            getattr(out.memory, field).value = memory[key]
    cpu = res.get("cpu") or {}
    for key, field in _CPU:
        if key in cpu:
            getattr(out.cpu, field).value = cpu[key]
    out.cpu.cpus = cpu.get("cpus", "")
    out.cpu.mems = cpu.get("mems", "")
    for h in res.get("hugepageLimits") or []:
        out.hugepage_limits.add(page_size=h["pageSize"], limit=h["limit"])
    out.unified.update(res.get("unified") or {})
    for d in res.get("devices") or []:
        rule = out.devices.add(allow=d.get("allow", False), type=d.get("type", ""),
                               access=d.get("access", ""))
        if d.get("major") is not None:
            rule.major.value = d["major"]
        if d.get("minor") is not None:
            rule.minor.value = d["minor"]
    if "pids" in res:
        out.pids.limit = res["pids"].get("limit", 0)
    return out


def from_cri(res: api_pb2.LinuxContainerResources) -> nri.LinuxResources:
    """A CRI resources message (pod resources and overhead, UpdateContainerResources) as NRI
    shows it: zero values are unset."""
    out = nri.LinuxResources()
    if res.memory_limit_in_bytes:
        out.memory.limit.value = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes:
        out.memory.swap.value = res.memory_swap_limit_in_bytes
    for value, field in ((res.cpu_shares, out.cpu.shares), (res.cpu_quota, out.cpu.quota),
                         (res.cpu_period, out.cpu.period)):
        if value:
            field.value = value
    out.cpu.cpus, out.cpu.mems = res.cpuset_cpus, res.cpuset_mems
    for h in res.hugepage_limits:
        out.hugepage_limits.add(page_size=h.page_size, limit=h.limit)
    out.unified.update(res.unified)
    return out


def merge(res: Spec, adj: nri.LinuxResources) -> None:
    """The fields ``adj`` sets, written into the OCI resources ``res`` (in place)."""
    if adj.HasField("blockio_class") or adj.HasField("rdt_class"):
        which = "block I/O" if adj.HasField("blockio_class") else "RDT"
        raise UnsupportedResource(f"{which} classes are not configured on this node")
    if adj.HasField("memory"):
        for key, field in _MEMORY:
            if has(adj.memory, field):
                res.setdefault("memory", {})[key] = getattr(adj.memory, field).value
    if adj.HasField("cpu"):
        for key, field in _CPU:
            if has(adj.cpu, field):
                res.setdefault("cpu", {})[key] = getattr(adj.cpu, field).value
        for key in ("cpus", "mems"):
            if getattr(adj.cpu, key):
                res.setdefault("cpu", {})[key] = getattr(adj.cpu, key)
    if adj.hugepage_limits:
        limits = {h["pageSize"]: h["limit"] for h in res.get("hugepageLimits") or []}
        limits.update({h.page_size: h.limit for h in adj.hugepage_limits})
        res["hugepageLimits"] = [{"pageSize": k, "limit": v} for k, v in limits.items()]
    if adj.unified:
        res.setdefault("unified", {}).update(adj.unified)
    for d in adj.devices:
        rule: Spec = {"allow": d.allow, "access": d.access}
        if d.type:
            rule["type"] = d.type
        if d.HasField("major"):
            rule["major"] = d.major.value
        if d.HasField("minor"):
            rule["minor"] = d.minor.value
        res.setdefault("devices", []).append(rule)
    if adj.HasField("pids"):
        res["pids"] = {"limit": adj.pids.limit}


def changed_fields(adj: nri.LinuxResources) -> list[tuple[str, str]]:
    """(field, key) pairs ``adj`` sets, for ownership: two plugins may not set the same one."""
    out: list[tuple[str, str]] = []
    if adj.HasField("memory"):
        out += [(f"memory {field}", "") for _, field in _MEMORY if has(adj.memory, field)]
    if adj.HasField("cpu"):
        out += [(f"cpu {field}", "") for _, field in _CPU if has(adj.cpu, field)]
        out += [(f"cpuset {key}", "") for key in ("cpus", "mems") if getattr(adj.cpu, key)]
    out += [("hugepage limit", h.page_size) for h in adj.hugepage_limits]
    out += [("unified cgroup resource", key) for key in adj.unified]
    if adj.HasField("pids"):
        out.append(("pids limit", ""))
    for name in ("blockio_class", "rdt_class"):
        if adj.HasField(name):
            out.append((name.replace("_", " "), ""))
    return out
