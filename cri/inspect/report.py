"""Gather one inspection into plain data: the ``--json`` document, which the table renders.

Keys are stable: every key is always present, with null where a value cannot be known (a
process that is gone has no namespaces or cgroup). README's "pycri inspect" section lists them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri.inspect import cgroup_limits, namespaces, netinfo, process
from cri.inspect.state import ContainerRecord, PodRecord, Target
from sandbox.cgroups import DEFAULT_ROOT


@dataclass(frozen=True)
class Paths:
    """Where the daemon keeps what is read (from its config and flags), and the kernel's
    trees (tests point these at tmp_path)."""

    exits_dir: Path
    runtime_roots: dict[str, str]  # handler -> its runtime's --root
    runroot: Path
    proc: Path = namespaces.PROC
    cgroup_root: Path = DEFAULT_ROOT

    def runtime_root(self, handler: str) -> Path:
        return Path(self.runtime_roots.get(handler) or os.path.join(self.runroot, handler))


def build(target: Target, paths: Paths) -> dict[str, Any]:
    pod = target.pod
    host_ns = namespaces.read("self", paths.proc) or {}
    infra_running = process.running(pod.infra_id, pod.pid, exits_dir=paths.exits_dir,
                                    runtime_root=paths.runtime_root(pod.handler), proc=paths.proc)
    infra_ns = namespaces.read(pod.pid, paths.proc) if infra_running else None
    procs = [_process("infra", pod.infra_id, "POD", pod.state, pod.pid, None, infra_running,
                      infra_ns, namespaces.infra_sharing(infra_ns or {}, host_ns), paths)]
    chosen = [target.container] if target.container is not None else target.containers
    for ctr in chosen:
        procs.append(_container(ctr, infra_ns, host_ns, paths))
    return {
        "kind": "container" if target.container is not None else "pod",
        "pod": _pod(pod),
        "processes": procs,
    }


def _pod(pod: PodRecord) -> dict[str, Any]:
    interfaces: list[dict[str, Any]] | None = None
    error = None
    if pod.netns_path:
        try:
            interfaces = [dataclasses.asdict(i) for i in netinfo.pod_interfaces(pod.netns_path)]
        except OSError as exc:
            error = f"cannot read the pod's network namespace {pod.netns_path}: {exc.strerror}"
    return {
        "id": pod.id,
        "namespace": pod.namespace,
        "name": pod.name,
        "state": pod.state,
        "host_network": not pod.netns_path,
        "netns": pod.netns_path or None,
        "ips": pod.ips,
        "interfaces": interfaces,
        "network_error": error,
        "cgroup_parent": pod.cgroup_parent,
    }


def _container(ctr: ContainerRecord, infra_ns: namespaces.Namespaces | None,
               host_ns: namespaces.Namespaces, paths: Paths) -> dict[str, Any]:
    alive = process.running(ctr.id, ctr.pid, exits_dir=paths.exits_dir,
                            runtime_root=paths.runtime_root(ctr.handler), proc=paths.proc)
    own = namespaces.read(ctr.pid, paths.proc) if alive else None
    return _process("container", ctr.id, ctr.name, ctr.state, ctr.pid, ctr.pid_namespace,
                    alive, own, namespaces.sharing(own or {}, infra_ns, host_ns), paths)


def _process(role: str, ident: str, name: str, state: str, pid: int, pid_mode: str | None,
             alive: bool, ns: namespaces.Namespaces | None, marks: dict[str, str],
             paths: Paths) -> dict[str, Any]:
    cgroup = cgroup_limits.read(pid, root=paths.cgroup_root, proc=paths.proc) if alive else None
    # The process may exit between the checks: then it is not running, as seen last.
    alive = alive and ns is not None and cgroup is not None
    return {
        "role": role,
        "id": ident,
        "name": name,
        "recorded_state": state,
        "pid": pid or None,
        "running": alive,
        "pid_namespace_mode": pid_mode,
        "namespaces": {kind: {"inode": ino, "sharing": marks[kind]}
                       for kind, ino in (ns or {}).items()} if alive else None,
        "cgroup": dataclasses.asdict(cgroup) if alive and cgroup is not None else None,
    }
