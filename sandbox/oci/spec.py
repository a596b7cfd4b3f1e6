"""Build OCI runtime specs (config.json) as plain dicts, and write bundles.

The spec is a ``dict[str, Any]`` ready for ``json.dump``: runc reads JSON, and a typed object
model would only be converted back to the same dict. The helpers here are the shared vocabulary
of every spec pycri writes; :func:`infra_spec` is the pod's pause container.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Spec = dict[str, Any]

OCI_VERSION = "1.0.2-dev"  # what runc 1.1 itself writes with `runc spec`
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_PAUSE_BINARY = Path("/usr/bin/catatonit")
PAUSE_PATH_IN_CONTAINER = "/pause"
# The kubelet's convention for "nobody": the infra process needs no identity at all.
INFRA_UID = 65535
INFRA_GID = 65535

# Kernel interfaces that leak host information or allow host-wide side effects; the same set
# CRI-O applies to every container (containers/common DefaultMaskedPaths plus CRI-O's own
# /proc/asound and /proc/interrupts). The per-CPU thermal_throttle glob is left out so the
# spec does not depend on the host it was built on.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def mount(destination: str, type_: str, source: str, options: Iterable[str] = ()) -> Spec:
    return {"destination": destination, "type": type_, "source": source, "options": list(options)}


def bind_mount(source: Path | str, destination: str, options: Iterable[str] = ()) -> Spec:
    # runc decides bind vs. real mount from the "bind"/"rbind" option; "type": "bind" is
    # what `runc spec --rootless` and CRI-O write, and keeps the intent obvious.
    return mount(destination, "bind", str(source), ["rbind", *options])


def sort_mounts(mounts: list[Spec]) -> list[Spec]:
    """Parents before children (a stable sort by depth), so /a/b is not hidden by /a."""
    def depth(m: Spec) -> int:
        return len([p for p in posixpath.normpath(m["destination"]).split("/") if p])
    return sorted(mounts, key=depth)


def namespace(type_: str, path: Path | str | None = None) -> Spec:
    """A namespace entry: a new one, or with ``path`` the existing one to join."""
    entry: Spec = {"type": type_}
    if path is not None:
        entry["path"] = str(path)
    return entry


def device_rule(
    allow: bool, access: str = "rwm", type_: str | None = None,
    major: int | None = None, minor: int | None = None,
) -> Spec:
    rule: Spec = {"allow": allow, "access": access}
    if type_ is not None:
        rule["type"] = type_
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


def default_device_rules() -> list[Spec]:
    """Deny every device, then allow the character devices every process expects.

    runc appends the same allow-list on its own; writing it out keeps the cgroup policy
    visible in config.json. mknod wildcards and /dev/net/tun are left out: containers get no
    CAP_MKNOD, and tun is not something a pod may use by default.
    """
    return [
        device_rule(False),
        device_rule(True, type_="c", major=1, minor=3),  # /dev/null
        device_rule(True, type_="c", major=1, minor=5),  # /dev/zero
        device_rule(True, type_="c", major=1, minor=7),  # /dev/full
        device_rule(True, type_="c", major=1, minor=8),  # /dev/random
        device_rule(True, type_="c", major=1, minor=9),  # /dev/urandom
        device_rule(True, type_="c", major=5, minor=0),  # /dev/tty
        device_rule(True, type_="c", major=5, minor=1),  # /dev/console
        device_rule(True, type_="c", major=5, minor=2),  # /dev/ptmx
        device_rule(True, type_="c", major=136),  # /dev/pts/*
    ]


def no_capabilities() -> Spec:
    return {name: [] for name in _CAPABILITY_SETS}


def base_mounts(*, private_mqueue: bool, sys_writable: bool = False) -> list[Spec]:
    """/proc, /dev, /dev/pts, /dev/mqueue and /sys, as `runc spec` writes them.

    /dev/mqueue is only mounted for a private IPC namespace: an mqueue mount shows the
    messages queues of the IPC namespace it is made in. /sys is read-only unless
    ``sys_writable`` (privileged containers).
    """
    mounts = [
        mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts", "devpts", "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
    ]
    if private_mqueue:
        mounts.append(mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]))
    sys_opts = ["nosuid", "noexec", "nodev", *([] if sys_writable else ["ro"])]
    mounts.append(mount("/sys", "sysfs", "sysfs", sys_opts))
    return mounts


def shm_mount(*, shm_path: Path | None, host_ipc: bool) -> Spec:
    """/dev/shm: the host's with host IPC, else the pod's tmpfs, else a private tmpfs."""
    options = ["rw", "nosuid", "nodev", "noexec"]
    if host_ipc:
        return bind_mount("/dev/shm", "/dev/shm", options)
    if shm_path is not None:
        return bind_mount(shm_path, "/dev/shm", options)
    return mount("/dev/shm", "tmpfs", "shm", [*options, "mode=1777", "size=65536k"])


def infra_spec(
    *,
    hostname: str,
    netns_path: Path | None,
    host_ipc: bool,
    host_pid: bool,
    share_pid: bool,
    cgroups_path: str,
    host_uts: bool | None = None,
    shm_path: Path | None = None,
    pause_binary: Path | None = DEFAULT_PAUSE_BINARY,
    args: Sequence[str] | None = None,
    sysctls: Mapping[str, str] | None = None,
    oom_score_adj: int | None = None,
    annotations: Mapping[str, str] | None = None,
    memory_limit: int | None = None,
    privileged: bool = False,
) -> Spec:
    """The spec of a pod's infra (pause) container.

    ``netns_path`` None means host network: no network namespace entry at all, so the process
    stays in the daemon's. ``host_uts`` defaults to following the host network, as the
    kubelet expects (a host-network pod sees the node's hostname). ``share_pid`` (pid mode
    POD) and CONTAINER mode give the infra the same new pid namespace; the difference is
    whether the other containers join it, which is their spec's business. It only matters
    here to refuse the contradiction of sharing a pod pid namespace on the host's.
    ``sysctls`` and ``oom_score_adj`` must already be validated and clamped by the caller.
    ``privileged`` mounts /sys read-write: sysfs has one superblock per network namespace, and
    the infra's mount is the pod's first, so a read-only one would make /sys read-only in the
    pod's privileged containers too (their own mounts never carry "ro").
    """
    if host_pid and share_pid:
        raise ValueError("share_pid (pid mode POD) contradicts host_pid (pid mode NODE)")
    if host_uts is None:
        host_uts = netns_path is None

    namespaces = [namespace("mount")]
    if not host_pid:
        namespaces.append(namespace("pid"))
    if not host_ipc:
        namespaces.append(namespace("ipc"))
    if not host_uts:
        namespaces.append(namespace("uts"))
    if netns_path is not None:
        namespaces.append(namespace("network", netns_path))

    process: Spec = {
        "terminal": False,
        "user": {"uid": INFRA_UID, "gid": INFRA_GID},
        # -P: catatonit's pause mode; it still reaps zombies when it is the pod's pid 1.
        "args": list(args) if args else [PAUSE_PATH_IN_CONTAINER, "-P"],
        "env": [DEFAULT_PATH_ENV],
        "cwd": "/",
        "capabilities": no_capabilities(),
        "noNewPrivileges": True,
    }
    if oom_score_adj is not None:
        process["oomScoreAdj"] = oom_score_adj

    mounts = base_mounts(private_mqueue=not host_ipc, sys_writable=privileged)
    mounts.append(shm_mount(shm_path=shm_path, host_ipc=host_ipc))
    if pause_binary is not None:  # None: the rootfs is a pause image that brings its own
        mounts.append(bind_mount(pause_binary, PAUSE_PATH_IN_CONTAINER, ["ro", "nosuid", "nodev"]))

    memory: Spec = {"swappiness": 0}  # pods run without swap (the kubelet's default)
    if memory_limit is not None:
        memory["limit"] = memory_limit

    linux: Spec = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": {"devices": default_device_rules(), "memory": memory},
        "sysctl": dict(sysctls or {}),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }

    spec: Spec = {
        "ociVersion": OCI_VERSION,
        "process": process,
        # An empty directory: catatonit is static and arrives through the /pause bind mount.
        "root": {"path": "rootfs", "readonly": True},
        "mounts": mounts,
        "linux": linux,
        "annotations": dict(annotations or {}),
    }
    # runc refuses to set a hostname without a private UTS namespace.
    if not host_uts:
        spec["hostname"] = hostname
    return spec


def write_bundle(bundle_dir: Path, spec: Spec) -> None:
    """Create ``bundle_dir`` with an empty ``rootfs`` and write ``config.json`` atomically.

    config.json is 0600: it can carry environment values and annotations that are nobody
    else's business. It is renamed into place so runc never reads a half-written file. No
    fsync: runc reads it at once, and after a machine crash the container it describes is gone.
    """
    bundle_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = Path(spec.get("root", {}).get("path", "rootfs"))
    if not root.is_absolute():  # an absolute root (an overlay mount) is not ours to create
        rootfs = bundle_dir / root
        rootfs.mkdir(exist_ok=True)
        # Explicit chmod: the umask must not lock the unprivileged infra user out of "/".
        rootfs.chmod(0o755)
    data = json.dumps(spec, separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(dir=bundle_dir, prefix=".config.json.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(bundle_dir / "config.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
