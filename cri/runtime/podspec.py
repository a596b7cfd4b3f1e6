"""Validate a PodSandboxConfig and derive the plain facts the pod is built from.

Everything here is pure: it runs before the name is reserved, so bad input changes nothing.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

from cri.api import api_pb2
from cri.config import Config
from cri.errors import InvalidArgument, Unimplemented
from sandbox import sysctl
from sandbox.cgroups.driver import CgroupDriver
from sandbox.errors import CgroupError, InvalidSysctl

NODE = api_pb2.NamespaceMode.NODE
POD = api_pb2.NamespaceMode.POD
TARGET = api_pb2.NamespaceMode.TARGET

# Name parts end up in the reserved name, paths, CNI_ARGS and log lines. The kubelet sends
# DNS-1123 names, but other clients (critest) use upper case, so allow letters of both cases and
# refuse only what could act as a separator or escape: '/', ';', '=', whitespace, quotes, NUL.
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,252})$")
_UID = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$")


@dataclass(frozen=True)
class PodPlan:
    host_network: bool
    host_ipc: bool
    host_pid: bool
    share_pid: bool  # pid mode POD: containers join the infra's pid namespace
    hostname: str
    cgroup_parent: str
    memory_limit: int | None
    sysctls: dict[str, str] = field(default_factory=dict)


def _check_metadata(md: api_pb2.PodSandboxMetadata) -> None:
    if not md.name or not md.namespace or not md.uid:
        raise InvalidArgument("pod sandbox metadata needs name, namespace and uid")
    if not _NAME.match(md.name):
        raise InvalidArgument(f"pod name {md.name!r} has characters a pod name cannot have")
    if not _NAME.match(md.namespace):
        raise InvalidArgument(f"pod namespace {md.namespace!r} has characters a namespace cannot have")
    if not _UID.match(md.uid):
        raise InvalidArgument(f"pod uid {md.uid!r} has characters a uid cannot have")


def _cgroup_parent(cfg: Config, driver: CgroupDriver, linux: api_pb2.LinuxPodSandboxConfig,
                   uid: str) -> str:
    """The pod's cgroup: the kubelet's cgroup_parent, or one of pycri's own under the
    configured parent. Joined under /sys/fs/cgroup, so it is checked: no '..' or odd
    characters may walk out of the hierarchy, and its form must fit the driver."""
    try:
        if not linux.cgroup_parent:
            return driver.pod_cgroup(cfg.runtime.cgroup_parent(), uid)
        parent = driver.pod_cgroup_in(driver.normalize(linux.cgroup_parent), uid)
    except CgroupError as exc:
        raise InvalidArgument(f"cgroup_parent: {exc}") from exc
    return parent


def _memory_limit(linux: api_pb2.LinuxPodSandboxConfig) -> int | None:
    limit = linux.resources.memory_limit_in_bytes if linux.HasField("resources") else 0
    if limit < 0:
        raise InvalidArgument("pod memory limit must not be negative")
    if limit == 0:
        return None
    # The pod overhead (RuntimeClass) is charged to the pod cgroup on top of the containers'.
    overhead = linux.overhead.memory_limit_in_bytes if linux.HasField("overhead") else 0
    return limit + max(overhead, 0)


def check_user_namespace(ns: api_pb2.NamespaceOption) -> None:
    """The node's user namespace (mode NODE, what the kubelet asks for unless hostUsers is
    false) is the only one there is: a request for a pod user namespace is refused rather than
    silently run as the node's root. RuntimeStatus tells the kubelet so up front."""
    if not ns.HasField("userns_options") or ns.userns_options.mode == NODE:
        return
    mode = api_pb2.NamespaceMode.Name(ns.userns_options.mode)
    if ns.userns_options.mode != POD:
        raise InvalidArgument(f"user namespace mode {mode} is not valid: a pod has its own "
                              "user namespace (POD) or the node's (NODE)")
    raise Unimplemented("user namespaces (mode POD) are not supported: runc 1.1 cannot make "
                        "idmapped mounts, so pycri reports user_namespaces false")


def plan(cfg: Config, driver: CgroupDriver, config: api_pb2.PodSandboxConfig) -> PodPlan:
    if not config.HasField("metadata"):
        raise InvalidArgument("pod sandbox config has no metadata")
    md = config.metadata
    _check_metadata(md)
    linux = config.linux
    ns = linux.security_context.namespace_options
    if ns.network == TARGET or ns.ipc == TARGET:
        raise InvalidArgument("namespace mode TARGET is only valid for the pid namespace")
    if ns.pid == TARGET:
        raise InvalidArgument("pid namespace mode TARGET applies to containers, not pods")
    check_user_namespace(ns)
    host_network, host_ipc, host_pid = ns.network == NODE, ns.ipc == NODE, ns.pid == NODE
    hostname = config.hostname or (socket.gethostname() if host_network else md.name[:63])
    defaults: dict[str, str] = {}
    for item in cfg.runtime.default_sysctls:
        key, _, value = item.partition("=")
        defaults[key.strip()] = value.strip()
    try:
        sysctls = sysctl.validate(
            {**defaults, **dict(linux.sysctls)}, host_network=host_network, host_ipc=host_ipc
        )
    except InvalidSysctl as exc:
        raise InvalidArgument(str(exc)) from exc
    for pm in config.port_mappings:
        if not 0 < pm.container_port < 65536 or not 0 <= pm.host_port < 65536:
            raise InvalidArgument(f"port mapping {pm.container_port}->{pm.host_port} out of range")
    return PodPlan(
        host_network=host_network,
        host_ipc=host_ipc,
        host_pid=host_pid,
        share_pid=ns.pid == POD,
        hostname=hostname,
        cgroup_parent=_cgroup_parent(cfg, driver, linux, md.uid),
        memory_limit=_memory_limit(linux),
        sysctls=sysctls,
    )
