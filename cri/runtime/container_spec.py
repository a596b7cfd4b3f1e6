"""The OCI spec of an application container, from its image config and the CRI ContainerConfig.

Everything here is a pure translation plus checks that need no side effect, so CreateContainer
can refuse bad input before it mounts or starts anything. The pieces with rules of their own
live in sandbox/oci/: capabilities, seccomp, the user lookup, devices, signals.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.image.manifest import ImageConfig
from cri.store.sandbox import Sandbox
from sandbox.cdi import inject as cdi_inject
from sandbox.cdi.inject import Injection
from sandbox.cgroups.features import Features
from sandbox.oci import spec as ocispec
from sandbox.oci.capabilities import bounding_set, container_capabilities
from sandbox.oci.devices import DeviceError, cgroup_rule, device_entry, host_devices
from sandbox.oci.mountinfo import propagation_of
from sandbox.oci.seccomp import SeccompError, default_profile, load_localhost_profile
from sandbox.oci.user import Identity
from sandbox.oom import clamp_oom_score_adj

log = logging.getLogger(__name__)

Spec = dict[str, Any]
NS = api_pb2.NamespaceMode
PROFILE = api_pb2.SecurityProfile.ProfileType

# Linux environment variable names are anything without "=" or NUL; the kubelet sends valid
# C identifiers, but images carry names like "a.b" that runc accepts too.
_ENV_NAME = re.compile(r"[^=\x00]+")
# CVE-2024-21626: a cwd of /proc/self/fd/N reaches a file descriptor runc leaked from the host;
# /proc/self/root/proc/self/fd/N and /proc/1/cwd/... reach it too. No process has a reason to
# start in /proc, so all of it is refused.
_PROC = re.compile(r"^/proc(/|$)")


@dataclass(frozen=True)
class SpecInputs:
    ctr_id: str
    pod: Sandbox
    config: api_pb2.ContainerConfig
    image: ImageConfig
    identity: Identity
    rootfs: Path
    cgroup_path: str
    pid_ns_path: str | None  # None: a new pid namespace (or the host's, see host_pid)
    host_pid: bool
    image_mounts: Mapping[str, Path]  # container path -> the mounted image volume
    cgroup_features: Features  # what the container's cgroup can get
    rro_supported: bool = True
    pids_limit: int = 0  # 0: none of the container's own (the pod cgroup may have one)
    apparmor_profile: str | None = None  # resolved by apparmor_profile.resolve; None: none
    host_devices: bool = True  # privileged containers get the host's devices (see handlers)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)  # let in by the handler
    cdi: Injection | None = None  # the CDI devices' edits (cri/runtime/cdi_devices.py)


def command(config: api_pb2.ContainerConfig, image: ImageConfig) -> list[str]:
    """The kubelet's rules: CRI command replaces ENTRYPOINT (and then the image CMD is dropped);
    CRI args replace CMD."""
    cmd, args = list(config.command), list(config.args)
    if not cmd:
        cmd = list(image.entrypoint)
        if not args:
            args = list(image.cmd)
    argv = cmd + args
    if not argv:
        raise InvalidArgument("no command specified: neither the container config nor the image "
                              "has one")
    return argv


def environment(config: api_pb2.ContainerConfig, image: ImageConfig, hostname: str,
                home: str) -> list[str]:
    """Image env, then the CRI's (a later value of a name wins), plus PATH, HOSTNAME, HOME."""
    env: dict[str, str] = {}
    for item in image.env:
        name, _, value = item.partition("=")
        env[name] = value
    for kv in config.envs:
        if not _ENV_NAME.fullmatch(kv.key):
            raise InvalidArgument(f"invalid environment variable name {kv.key!r}")
        value = kv.value.decode(errors="surrogateescape") if isinstance(kv.value, bytes) else kv.value
        if "\x00" in value:
            raise InvalidArgument(f"environment variable {kv.key} contains a NUL byte")
        env[kv.key] = value
    env.setdefault("PATH", ocispec.DEFAULT_PATH_ENV.split("=", 1)[1])
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home or "/")
    return [f"{k}={v}" for k, v in env.items()]


def working_dir(config: api_pb2.ContainerConfig, image: ImageConfig) -> str:
    cwd = config.working_dir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"working dir {cwd!r} is not an absolute path")
    # normpath keeps a leading "//" (POSIX leaves it implementation-defined; Linux treats it
    # as "/"), so it is collapsed first.
    norm = "/" + posixpath.normpath(cwd).lstrip("/")
    if _PROC.match(norm):
        raise InvalidArgument(f"working dir {cwd!r} is inside /proc")
    return norm


def _propagation_option(m: api_pb2.Mount) -> tuple[str, str | None]:
    """The bind option, and the rootfs propagation the spec then needs."""
    P = api_pb2.MountPropagation
    if m.propagation == P.PROPAGATION_PRIVATE:
        return "rprivate", None
    source = Path(m.host_path)
    entry = propagation_of(source)
    if m.propagation == P.PROPAGATION_BIDIRECTIONAL:
        if entry is None or not entry.shared:
            raise InvalidArgument(
                f"mount {m.host_path} -> {m.container_path}: bidirectional propagation needs "
                f"{entry.mount_point if entry else m.host_path} to be a shared mount on the host "
                "(mount --make-rshared)")
        return "rshared", "rshared"
    if m.propagation == P.PROPAGATION_HOST_TO_CONTAINER:
        if entry is None or not (entry.shared or entry.slave):
            raise InvalidArgument(
                f"mount {m.host_path} -> {m.container_path}: host-to-container propagation "
                f"needs {entry.mount_point if entry else m.host_path} to be a shared or slave "
                "mount on the host (mount --make-rshared)")
        return "rslave", "rslave"
    raise InvalidArgument(f"mount {m.container_path}: unknown propagation {m.propagation}")


def cri_mounts(mounts: Sequence[api_pb2.Mount], image_mounts: Mapping[str, Path],
               rro_supported: bool = True) -> tuple[list[Spec], str | None]:
    """Bind mounts for the CRI's mounts, and the rootfs propagation they need."""
    out: list[Spec] = []
    rootfs_prop: str | None = None
    for m in mounts:
        dest = m.container_path
        if not dest.startswith("/"):
            raise InvalidArgument(f"mount destination {dest!r} is not an absolute path")
        if m.HasField("image") and m.image.image:
            if not m.readonly:
                raise InvalidArgument(f"image volume at {dest} must be read-only")
            if dest not in image_mounts:
                raise InvalidArgument(f"image volume at {dest} was not mounted")
            out.append(ocispec.bind_mount(image_mounts[dest], dest,
                                          ["ro", "nosuid", "nodev", "rprivate"]))
            continue
        if not m.host_path:
            raise InvalidArgument(f"mount {dest}: empty host path")
        if m.recursive_read_only:
            if not m.readonly:
                raise InvalidArgument(f"mount {dest}: recursive read-only needs readonly")
            if m.propagation != api_pb2.MountPropagation.PROPAGATION_PRIVATE:
                raise InvalidArgument(f"mount {dest}: recursive read-only needs private "
                                      "propagation")
            if not rro_supported:
                raise InvalidArgument(f"mount {dest}: the OCI runtime does not support "
                                      "recursive read-only mounts")
        host = os.path.realpath(m.host_path)  # a symlinked host path mounts its target
        if not os.path.exists(host) and os.path.lexists(m.host_path):
            raise InvalidArgument(f"mount {dest}: host path {m.host_path} is a dangling symlink")
        prop, need = _propagation_option(m)
        if need == "rshared" or (need == "rslave" and rootfs_prop is None):
            rootfs_prop = need
        options = [prop]
        if m.recursive_read_only:
            options.append("rro")
        elif m.readonly:
            options.append("ro")
        out.append(ocispec.bind_mount(host, dest, options))
    return out, rootfs_prop


def missing_host_paths(mounts: Sequence[api_pb2.Mount]) -> list[Path]:
    """The host paths of bind mounts that do not exist, as the spec names them.

    The kubelet passes a hostPath volume without a type through unchecked (the Docker
    behaviour it keeps), and CRI-O and containerd create such a path as a directory:
    kubeadm's kube-proxy mounts /lib/modules that way, which a node without kernel modules
    lacks. CreateContainer creates them once every check of the request has passed.
    """
    out = []
    for m in mounts:
        if (m.HasField("image") and m.image.image) or not m.host_path:
            continue
        host = os.path.realpath(m.host_path)
        if not os.path.lexists(host):
            out.append(Path(host))
    return out


def _default_mounts(inp: SpecInputs, privileged: bool) -> list[Spec]:
    pod = inp.pod
    host_ipc = not pod.meta.shm_path
    # sysfs writable for a privileged container, as in CRI-O and containerd.
    mounts = ocispec.base_mounts(private_mqueue=not host_ipc, sys_writable=privileged)
    cg_opts = ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"]
    mounts.append(ocispec.mount("/sys/fs/cgroup", "cgroup", "cgroup", cg_opts))
    mounts.append(ocispec.shm_mount(shm_path=Path(pod.meta.shm_path) if pod.meta.shm_path
                                    else None, host_ipc=host_ipc))
    run_dir = Path(pod.meta.run_dir)
    ro = [] if not inp.config.linux.security_context.readonly_rootfs else ["ro"]
    for name in ("hostname", "resolv.conf"):
        if (run_dir / name).exists():
            mounts.append(ocispec.bind_mount(run_dir / name, f"/etc/{name}",
                                             ["rprivate", "nosuid", "nodev", "noexec", *ro]))
    return mounts


def _namespaces(inp: SpecInputs) -> list[Spec]:
    pod = inp.pod
    infra = f"/proc/{pod.status.pid}/ns"
    nss = [ocispec.namespace("mount")]
    if pod.meta.netns_path:
        nss.append(ocispec.namespace("network", f"{infra}/net"))
    if pod.meta.shm_path:  # a private IPC namespace: the pod's
        nss.append(ocispec.namespace("ipc", f"{infra}/ipc"))
    if pod.meta.netns_path:  # UTS follows the network (host network -> the node's hostname)
        nss.append(ocispec.namespace("uts", f"{infra}/uts"))
    if inp.pid_ns_path is not None:
        nss.append(ocispec.namespace("pid", inp.pid_ns_path))
    elif not inp.host_pid:
        nss.append(ocispec.namespace("pid"))
    return nss


def _seccomp(sc: api_pb2.LinuxContainerSecurityContext, caps: list[str]) -> Spec | None:
    profile = sc.seccomp if sc.HasField("seccomp") else None
    if profile is None:
        legacy = sc.seccomp_profile_path  # the deprecated string form
        if legacy in ("runtime/default", "docker/default"):
            return default_profile(caps)
        if legacy.startswith("localhost/"):
            path = Path(legacy.removeprefix("localhost/"))
        else:
            return None  # "", "unconfined": the CRI's nil is unconfined
    elif profile.profile_type == PROFILE.RuntimeDefault:
        return default_profile(caps)
    elif profile.profile_type == PROFILE.Unconfined:
        return None
    else:
        path = Path(profile.localhost_ref)
    try:
        return load_localhost_profile(path, caps)
    except SeccompError as exc:
        raise InvalidArgument(str(exc)) from exc


def resources(res: api_pb2.LinuxContainerResources, cg: Features) -> Spec:
    """The OCI linux.resources of ``res``, less what the container's cgroup cannot get (runc
    would fail the create on it): typed fields are left out, unified keys refused."""
    out: Spec = {}
    left_out: list[str] = []
    cpu: Spec = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if (res.cpuset_cpus or res.cpuset_mems) and not cg.has("cpuset"):
        left_out.append("cpuset")
    else:
        if res.cpuset_cpus:
            cpu["cpus"] = res.cpuset_cpus
        if res.cpuset_mems:
            cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    # Swap is disabled exactly as for pods: memory+swap equal to the limit (memsw on v1;
    # runc turns it into swap.max=0 on v2), swappiness 0 where there is no limit. A kernel
    # without swap accounting has no swap limit to set (nor can a container's swap be told).
    memory: Spec = {} if cg.v2 else {"swappiness": 0}
    if res.memory_limit_in_bytes < 0:
        raise InvalidArgument("memory limit must not be negative")
    if res.memory_limit_in_bytes:
        memory["limit"] = res.memory_limit_in_bytes
        if cg.swap:
            memory["swap"] = res.memory_limit_in_bytes
    if memory:
        out["memory"] = memory
    # The kubelet sends a limit (often 0) for every page size the node has, whether or not the
    # hugetlb controller reaches the container's cgroup (not mounted on many v1 hosts); left
    # out, as CRI-O does, since the client did not pick them.
    if res.hugepage_limits:
        if cg.has("hugetlb"):
            out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                     for h in res.hugepage_limits]
        else:
            left_out.append("hugepage limits")
    if res.unified and not cg.v2:
        raise InvalidArgument("unified cgroup resources need a cgroup v2 host")
    # A unified key is a file the client asked for by name; one that cannot be written is
    # refused rather than dropped, so no workload runs without a limit its owner set (the
    # kubelet's own keys, memory.* for MemoryQoS, always have their controller).
    for key in res.unified:
        why = cg.unified_refusal(key)
        if why is not None:
            raise InvalidArgument(f"unified cgroup resource {key!r} cannot be applied: {why}")
    if cg.v2:
        # swap.max=0 through the unified map too: runc 1.1 leaves a swap limit of 0 out of the
        # systemd scope's properties (it cannot tell 0 from unset) and writes the file behind
        # systemd's back, which a daemon-reload undoes; a unified value becomes MemorySwapMax.
        unified = dict(res.unified)
        if cg.swap:
            unified.setdefault("memory.swap.max", "0")
        if unified:
            out["unified"] = unified
    if left_out:
        log.debug("left out of a container's OCI resources, its cgroup cannot get them: %s",
                  ", ".join(left_out))
    return out


def container_spec(inp: SpecInputs) -> Spec:
    cfg = inp.config
    sc = cfg.linux.security_context
    privileged = sc.privileged
    if privileged and not inp.pod.config.linux.security_context.privileged:
        raise InvalidArgument("a privileged container needs a privileged pod sandbox")
    ident = inp.identity
    try:
        caps = container_capabilities(list(sc.capabilities.add_capabilities),
                                      list(sc.capabilities.drop_capabilities),
                                      privileged=privileged, bounding=bounding_set())
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    process: Spec = {
        "terminal": cfg.tty,
        "user": {"uid": ident.uid, "gid": ident.gid,
                 **({"additionalGids": list(ident.additional_gids)} if ident.additional_gids
                    else {})},
        "args": command(cfg, inp.image),
        "env": environment(cfg, inp.image, inp.pod.meta.hostname, ident.home),
        "cwd": working_dir(cfg, inp.image),
        "capabilities": caps,
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": clamp_oom_score_adj(cfg.linux.resources.oom_score_adj),
    }
    if ident.username:
        process["user"]["username"] = ident.username
    if inp.apparmor_profile is not None:
        # runc puts the process under it at its final execve; `runc exec` copies the whole
        # process section, so ExecSync and exec run under the same profile.
        process["apparmorProfile"] = inp.apparmor_profile

    mounts, rootfs_prop = cri_mounts(cfg.mounts, inp.image_mounts, inp.rro_supported)
    taken = {posixpath.normpath(m["destination"]) for m in mounts}
    defaults = [m for m in _default_mounts(inp, privileged) if m["destination"] not in taken]

    res = resources(cfg.linux.resources, inp.cgroup_features)
    devices: list[Spec] = []
    rules = ocispec.default_device_rules()
    if privileged and inp.host_devices:
        # Without the host's devices the default device rules stay too: nothing of the
        # host's /dev is the container's to open.
        devices = host_devices()
        rules = [ocispec.device_rule(True)]
    for d in cfg.devices:
        try:
            entry = device_entry(Path(d.host_path), d.container_path)
        except DeviceError as exc:
            raise InvalidArgument(str(exc)) from exc
        perms = d.permissions or "rwm"
        if not set(perms) <= set("rwm"):
            raise InvalidArgument(f"device {d.host_path}: invalid permissions {perms!r}")
        devices = [x for x in devices if x["path"] != d.container_path] + [entry]
        rules.append(cgroup_rule(entry, perms))
    res["devices"] = rules
    if inp.pids_limit > 0:
        if inp.cgroup_features.has("pids"):
            res["pids"] = {"limit": inp.pids_limit}
        else:
            log.debug("container %s: no pids controller for its cgroup, pids_limit left out",
                      inp.ctr_id)

    linux: Spec = {
        "namespaces": _namespaces(inp),
        "cgroupsPath": inp.cgroup_path,
        "resources": res,
        "devices": devices,
    }
    if not privileged:
        linux["maskedPaths"] = sorted({*ocispec.MASKED_PATHS, *sc.masked_paths})
        linux["readonlyPaths"] = sorted({*ocispec.READONLY_PATHS, *sc.readonly_paths})
        seccomp = _seccomp(sc, caps["bounding"])
        if seccomp is not None:
            linux["seccomp"] = seccomp
    if rootfs_prop:
        linux["rootfsPropagation"] = rootfs_prop

    spec: Spec = {
        "ociVersion": ocispec.OCI_VERSION,
        "process": process,
        "root": {"path": str(inp.rootfs), "readonly": sc.readonly_rootfs},
        "mounts": ocispec.sort_mounts(defaults + mounts),
        "linux": linux,
        "annotations": {
            **inp.pod_annotations,
            **dict(cfg.annotations),
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": cfg.metadata.name,
            "io.kubernetes.cri.sandbox-id": inp.pod.id,
        },
    }
    if inp.cdi is not None:
        # Last: a vendor's device node, mount or variable wins over the request's own.
        cdi_inject.apply(spec, inp.cdi)
    return spec
