"""What a plugin's CreateContainer reply changes in the container's OCI spec, applied one plugin
at a time so the next plugin sees the result (NRI's ContainerAdjustment).

Supported: annotations, env, args, mounts, OCI hooks, devices, rlimits, oom_score_adj and the
linux resources (memory, cpu and cpuset, hugepages, unified, pids, device rules). Keys marked
with a leading "-" remove what the spec has. Adjustments pycri cannot apply faithfully (cgroups
path, namespaces, sysctls, seccomp policy, scheduler, I/O priority, RDT, memory policy, network
and CDI devices, block I/O and RDT classes) are refused, so no workload silently runs without
something a plugin asked for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cri.nri import resources
from cri.nri.api import api_pb2 as nri
from cri.nri.owners import Owners
from sandbox.oci import spec as ocispec
from sandbox.oom import clamp_oom_score_adj

Spec = dict[str, Any]
# Checks the spec's resources against what the container's cgroup can get (ValueError if not).
ResourceCheck = Callable[[Spec], None]

_ENV_NAME = re.compile(r"[^=\x00]+")
_HOOK_KINDS = (("prestart", "prestart"), ("create_runtime", "createRuntime"),
               ("create_container", "createContainer"), ("start_container", "startContainer"),
               ("poststart", "poststart"), ("poststop", "poststop"))
_UNSUPPORTED_LINUX = ("io_priority", "seccomp_policy", "scheduler", "rdt", "memory_policy")
_UNSUPPORTED_LINUX_LISTS = ("namespaces", "sysctl", "net_devices")


class AdjustmentError(ValueError):
    pass


def removal(key: str) -> tuple[str, bool]:
    """NRI marks a key (annotation, env name, mount destination, device path) for removal
    with a leading "-"."""
    return (key[1:], True) if key.startswith("-") else (key, False)


def apply(spec: Spec, adj: nri.ContainerAdjustment, *, plugin: str, ctr_id: str,
          owners: Owners, check: ResourceCheck) -> None:
    """Apply ``plugin``'s adjustment to ``spec`` in place; AdjustmentError or Conflict (both
    ValueErrors naming the plugin) if it cannot be."""
    _refuse_unsupported(adj, plugin)

    def claim(field: str, key: str = "") -> None:
        owners.claim(ctr_id, field, key, plugin)

    process = spec.setdefault("process", {})
    linux = spec.setdefault("linux", {})
    annotations = spec.setdefault("annotations", {})
    for k, v in adj.annotations.items():
        key, remove = removal(k)
        if remove:
            owners.clear(ctr_id, "annotation", key)
            annotations.pop(key, None)
        else:
            claim("annotation", key)
            annotations[key] = v
    if adj.env:
        _adjust_env(process, adj.env, claim, lambda key: owners.clear(ctr_id, "env", key),
                    plugin)
    if adj.args:
        args = list(adj.args)
        if args[0] == "":  # "replace whatever an earlier plugin set"
            owners.clear(ctr_id, "args", "")
            args = args[1:]
        claim("args")
        if args:
            process["args"] = args
    if adj.mounts:
        _adjust_mounts(spec, adj.mounts, claim, lambda key: owners.clear(ctr_id, "mount", key),
                       plugin)
    if adj.HasField("hooks"):
        owners.add_hooks(ctr_id, plugin)
        hooks = spec.setdefault("hooks", {})
        for field, oci in _HOOK_KINDS:
            for h in getattr(adj.hooks, field):
                if not h.path.startswith("/"):
                    raise AdjustmentError(f"NRI plugin {plugin}: hook path {h.path!r} is not "
                                          "absolute")
                hook: Spec = {"path": h.path, "args": list(h.args), "env": list(h.env)}
                if h.HasField("timeout"):
                    hook["timeout"] = h.timeout.value
                hooks.setdefault(oci, []).append(hook)
    for limit in adj.rlimits:
        claim("rlimit", limit.type)
        kept = [r for r in process.get("rlimits", []) if r["type"] != limit.type]
        process["rlimits"] = [*kept, {"type": limit.type, "hard": limit.hard,
                                      "soft": limit.soft}]
    if not adj.HasField("linux"):
        return
    la = adj.linux
    if la.devices:
        _adjust_devices(linux, la.devices, claim,
                        lambda key: owners.clear(ctr_id, "device", key), plugin)
    if la.HasField("oom_score_adj"):
        claim("oom_score_adj")
        process["oomScoreAdj"] = clamp_oom_score_adj(la.oom_score_adj.value)
    if la.HasField("resources"):
        for field, key in resources.changed_fields(la.resources):
            claim(field, key)
        res = linux.setdefault("resources", {})
        try:
            resources.merge(res, la.resources)
            check(res)
        except ValueError as exc:
            raise AdjustmentError(f"NRI plugin {plugin}: {exc}") from None


def _refuse_unsupported(adj: nri.ContainerAdjustment, plugin: str) -> None:
    what = []
    if adj.CDI_devices:
        what.append("CDI devices")
    if adj.HasField("linux"):
        la = adj.linux
        if la.cgroups_path:
            what.append("cgroups path")
        what += [f.replace("_", " ") for f in _UNSUPPORTED_LINUX if resources.has(la, f)]
        what += [f.replace("_", " ") for f in _UNSUPPORTED_LINUX_LISTS if getattr(la, f)]
    if what:
        raise AdjustmentError(f"NRI plugin {plugin} asked to adjust {', '.join(what)}, which "
                              "pycri does not support")


def _adjust_env(process: Spec, env: Any, claim: Callable[[str, str], None],
                clear: Callable[[str], None], plugin: str) -> None:
    current: dict[str, str] = {}
    for item in process.get("env", []):
        name, _, value = item.partition("=")
        current[name] = value
    for kv in env:
        key, remove = removal(kv.key)
        if remove:
            clear(key)
            current.pop(key, None)
            continue
        if not _ENV_NAME.fullmatch(key) or "\x00" in kv.value:
            raise AdjustmentError(f"NRI plugin {plugin}: invalid environment variable {key!r}")
        claim("env", key)
        current[key] = kv.value
    process["env"] = [f"{k}={v}" for k, v in current.items()]


def _adjust_mounts(spec: Spec, mounts: Any, claim: Callable[[str, str], None],
                   clear: Callable[[str], None], plugin: str) -> None:
    linux = spec.setdefault("linux", {})
    out: list[Spec] = spec.get("mounts", [])
    for m in mounts:
        dest, remove = removal(m.destination)
        out = [x for x in out if x["destination"] != dest]
        if remove:
            clear(dest)
            continue
        if not dest.startswith("/"):
            raise AdjustmentError(f"NRI plugin {plugin}: mount destination {dest!r} is not "
                                  "absolute")
        claim("mount", dest)
        out.append(ocispec.mount(dest, m.type, m.source, m.options))
        # A shared or slave mount needs a rootfs that propagates likewise; rshared wins.
        if "rshared" in m.options:
            linux["rootfsPropagation"] = "rshared"
        elif "rslave" in m.options and linux.get("rootfsPropagation") != "rshared":
            linux["rootfsPropagation"] = "rslave"
    spec["mounts"] = ocispec.sort_mounts(out)


def _adjust_devices(linux: Spec, devices: Any, claim: Callable[[str, str], None],
                    clear: Callable[[str], None], plugin: str) -> None:
    for d in devices:
        path, remove = removal(d.path)
        linux["devices"] = [x for x in linux.get("devices", []) if x["path"] != path]
        if remove:
            clear(path)
            continue
        if not path.startswith("/dev/") or d.type not in ("c", "b", "u", "p"):
            raise AdjustmentError(f"NRI plugin {plugin}: invalid device {path!r} of type "
                                  f"{d.type!r}")
        claim("device", path)
        entry: Spec = {"path": path, "type": d.type, "major": d.major, "minor": d.minor}
        for field, key in (("file_mode", "fileMode"), ("uid", "uid"), ("gid", "gid")):
            if resources.has(d, field):
                entry[key] = getattr(d, field).value
        linux["devices"].append(entry)
        # Read and write, and mknod for block devices, as NRI grants an injected device.
        access = "rwm" if d.type == "b" else "rw"
        linux.setdefault("resources", {}).setdefault("devices", []).append(
            ocispec.device_rule(True, access, d.type, d.major, d.minor))
