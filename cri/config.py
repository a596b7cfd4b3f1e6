"""pycri's configuration: one dataclass per TOML table, CRI-O-like names.

The same field definitions give the defaults, the validation and the commented default config
that ``pycri config`` prints (CRI-O generates its template from its config structs the same way).
``validate()`` is pure; ``prepare()`` is the only function that touches the filesystem.
"""

from __future__ import annotations

import copy
import dataclasses
import grp
import ipaddress
import os
import re
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.apparmor import check_name as check_apparmor_name

DEFAULT_CONFIG_PATH = Path("/etc/pycri/pycri.conf")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Directories of general use, never given to [pycri.api] socket_group.
SHARED_DIRS = frozenset({"/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm", "/var/lib",
                         "/var", "/etc"})
CGROUP_DRIVERS = ("cgroupfs", "systemd")
# What an empty default_cgroup_parent / conmon_cgroup means, per driver.
DEFAULT_CGROUP_PARENT = {"cgroupfs": "/pycri", "systemd": "pycri.slice"}
DEFAULT_CONMON_CGROUP = {"cgroupfs": "/pycri-conmon", "systemd": "pod"}


# What pycri itself keeps in runroot: a handler's default runtime_root must not be one of them.
RUNROOT_DIRS = ("sandboxes", "exits", "exec")
# A RuntimeClass handler name is a DNS label (RFC 1123), as Kubernetes validates it.
_HANDLER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ConfigError(Exception):
    """Invalid configuration; the message names the offending key."""


def _opt(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


def _opt_list(default: list[str], doc: str) -> Any:
    return field(default_factory=lambda: list(default), metadata={"doc": doc})


def _opt_tables(entry: type, default: Mapping[str, Any], doc: str) -> Any:
    """A map of named tables of type ``entry``, [<table>.<field>.NAME] in TOML."""
    return field(default_factory=lambda: copy.deepcopy(dict(default)),
                 metadata={"tables": doc, "entry": entry})


@dataclass
class HandlerConfig:
    """[pycri.runtime.handlers.NAME]"""

    runtime_path: str = _opt(
        "", "OCI runtime binary (runc's command line): a path, or a name looked up in PATH. "
        "Empty: the handler's name, looked up in PATH.")
    runtime_root: str = _opt(
        "", "The OCI runtime's state directory (its --root). Empty: <runroot>/<NAME>.")
    monitor_path: str = _opt(
        "", "conmon binary of this handler's pods: a path, or a name looked up in PATH. Empty: "
        "[pycri.runtime] conmon_path.")
    allowed_annotations: list[str] = _opt_list(
        [], "Pod annotations that reach the OCI spec of the pod's infra and of every container "
        "of it, for runtimes that read them there (VM-based ones do): keys, or prefixes "
        'ending in "*". Other pod annotations stay out of the specs.')
    privileged_without_host_devices: bool = _opt(
        False, "Privileged containers do not get the host's devices (for runtimes to which "
        "the host's /dev means nothing, such as VM-based ones); devices a container asks for "
        "are still given.")


@dataclass
class APIConfig:
    """[pycri.api]

    The CRI gRPC socket, and the streaming server behind the URLs Exec, Attach and
    PortForward return.
    """

    listen: str = _opt("/run/pycri/pycri.sock", "Path of the unix socket the CRI gRPC server listens on.")
    socket_mode: str = _opt("0660", "File mode of the socket (octal); never world-accessible.")
    socket_group: str = _opt(
        "",
        "Group (name or numeric gid) the socket belongs to, so that with socket_mode 0660 its "
        "members can use the CRI without root (crictl). The socket's directory is then made "
        "0710 and given to that group too, so they can reach the socket and list nothing; it must "
        "be a directory of pycri's own (the default's is runroot). Empty: root's group, and only "
        "root reaches the socket.",
    )
    stream_address: str = _opt("127.0.0.1", "Address the exec/attach/port-forward server binds.")
    stream_port: int = _opt(0, "Port of the streaming server; 0 picks a free one.")
    stream_tls_cert: str = _opt(
        "", "PEM certificate of the streaming server; empty serves plain HTTP (set with the key)."
    )
    stream_tls_key: str = _opt("", "PEM private key for stream_tls_cert.")
    stream_idle_timeout: float = _opt(
        14400.0, "Seconds an exec/attach/port-forward session may pass no bytes before it is closed."
    )
    stream_token_ttl: float = _opt(
        60.0, "Seconds a streaming URL returned by Exec/Attach/PortForward stays usable (once)."
    )
    shutdown_grace: float = _opt(
        10.0, "Seconds in-flight calls get to finish on SIGTERM before the server stops."
    )


@dataclass
class RuntimeConfig:
    """[pycri.runtime]

    How pods and containers run: the OCI runtime handlers and conmon, cgroups, the pause
    process, timeouts and the default AppArmor profile.
    """

    default_runtime: str = _opt(
        "runc", "The handler of pods that name none (RunPodSandbox's runtime_handler \"\"): one of "
        'the [pycri.runtime.handlers.NAME] tables. Empty means "runc".')
    conmon_path: str = _opt(
        "conmon", "conmon binary: a path, or a name looked up in PATH (a handler's monitor_path "
        "overrides it).")
    cgroup_driver: str = _opt(
        "cgroupfs",
        'Cgroup driver, as the kubelet\'s cgroupDriver: "cgroupfs" (pycri writes the cgroup tree) '
        'or "systemd" (pods are slices, containers scopes, made through systemd over D-Bus; '
        "needs systemd as PID 1; proven on cgroup v2). The kubelet must use the same one.",
    )
    default_cgroup_parent: str = _opt(
        "",
        "Parent of pod cgroups when the kubelet sends no cgroup_parent: a cgroupfs path with "
        'the cgroupfs driver, a slice with systemd. Empty: "/pycri" (cgroupfs) or "pycri.slice" '
        "(systemd, pods then are pycri-pod<uid>.slice).",
    )
    default_sysctls: list[str] = _opt_list(
        [], 'Sysctls applied to every pod, as "key=value" (pod sysctls win).'
    )
    pause_binary: str = _opt(
        "/usr/bin/catatonit", "Static init bind-mounted as the built-in pause process (-P)."
    )
    runtime_timeout: float = _opt(60.0, "Seconds a runc or conmon step may take before it is killed.")
    pids_limit: int = _opt(
        0, "Most processes (and threads) one container may have; 0 leaves it to the pod cgroup."
    )
    hooks_dir: list[str] = _opt_list(
        ["/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"],
        "Directories of OCI hook files (oci-hooks(5): *.json of schema 1.0.0, as CRI-O and "
        "Podman read them), in order: a file masks the one of the same name in an earlier "
        "directory. Every container whose OCI spec matches a hook's \"when\" gets it in the "
        "hook's stages (pod infra containers get none, as with CRI-O). Missing directories "
        "are skipped; files are read again when they change; an invalid file is logged and "
        "skipped.",
    )
    apparmor_profile: str = _opt(
        "pycri-default",
        "AppArmor profile of containers that ask for RuntimeDefault (or for nothing), where the "
        "kernel has AppArmor. \"pycri-default\" is pycri's own, which it loads with "
        "apparmor_parser at start-up when missing or out of date; another name must be a "
        "profile loaded before pycri starts; \"unconfined\" runs them without one. "
        "Privileged containers run unconfined unless they name a profile.",
    )
    conmon_cgroup: str = _opt(
        "",
        "Where every conmon is moved before it starts anything: outside the daemon's own "
        "cgroup, so a service manager that kills pycri's cgroup on stop or restart leaves the "
        "containers' monitors alone. cgroupfs driver: a cgroupfs path shared by all conmons. "
        'systemd driver: "pod" (a pycri-conmon-<id>.scope in the pod\'s slice, counted to the '
        'pod) or a slice such as "system.slice". Empty: "/pycri-conmon" (cgroupfs) or "pod" '
        "(systemd).",
    )

    handlers: dict[str, HandlerConfig] = _opt_tables(
        HandlerConfig, {"runc": HandlerConfig()},
        "RuntimeClass handlers, as CRI-O's [crio.runtime.runtimes.NAME]: a pod whose "
        "RunPodSandbox names handler NAME (the handler of its RuntimeClass) runs its infra "
        "and every container with this OCI runtime and monitor. Tables add to the default "
        "one, runc.")

    def default_handler(self) -> str:
        """default_runtime, or "runc" when it is empty."""
        return self.default_runtime or "runc"

    def handler(self, name: str, runroot: str) -> HandlerConfig:
        """Handler ``name`` with its empty keys filled in (binaries not looked up yet)."""
        table = self.handlers[name]
        return HandlerConfig(
            runtime_path=table.runtime_path or name,
            runtime_root=table.runtime_root or os.path.join(runroot, name),
            monitor_path=table.monitor_path or self.conmon_path,
            allowed_annotations=list(table.allowed_annotations),
            privileged_without_host_devices=table.privileged_without_host_devices,
        )

    def cgroup_parent(self) -> str:
        """default_cgroup_parent, or the driver's default when it is empty."""
        return self.default_cgroup_parent or DEFAULT_CGROUP_PARENT[self.cgroup_driver]

    def monitor_cgroup(self) -> str:
        """conmon_cgroup, or the driver's default when it is empty."""
        return self.conmon_cgroup or DEFAULT_CONMON_CGROUP[self.cgroup_driver]


@dataclass
class ImageConfig:
    """[pycri.image]

    Where images are pulled from, and the pods' infra image.
    """

    pause_image: str = _opt(
        "", "Infra image reference; empty uses the built-in pause (no pull, works offline)."
    )
    registries_conf: str = _opt(
        "/etc/containers/registries.conf", "containers-registries.conf(5) v2 file."
    )


@dataclass
class NetworkConfig:
    """[pycri.network]

    Pod networks, through CNI plugins.
    """

    conf_dir: str = _opt("/etc/cni/net.d", "Directory of CNI network configs; the first valid wins.")
    plugin_dirs: list[str] = _opt_list(
        ["/opt/cni/bin", "/usr/lib/cni"], "Directories searched, in order, for CNI plugins."
    )
    cache_dir: str = _opt("", "CNI result cache; empty means <root>/cni-cache.")
    netns_dir: str = _opt("/var/run/netns", "Where pod network namespaces are pinned.")
    plugin_timeout: float = _opt(60.0, "Seconds a CNI plugin may run before it is killed.")
    masquerade_cidrs: list[str] = _opt_list(
        [],
        "Pod subnets whose traffic to anywhere outside them pycri masquerades, with one nat rule "
        "per subnet (chain PYCRI-MASQ) added at start-up: for networks whose plugins do not "
        "masquerade (bridge with ipMasq false), instead of a chain per pod. A subnet taken out "
        "of the list loses its rule at the next start.",
    )


@dataclass
class NRIConfig:
    """[pycri.nri]

    NRI plugins (the Node Resource Interface of containerd and CRI-O).
    """

    enable: bool = _opt(
        True,
        "Serve NRI (Node Resource Interface) plugins: they see pod and container lifecycle "
        "events and may adjust containers as they are created, as with containerd and CRI-O.",
    )
    socket_path: str = _opt(
        "/var/run/nri/nri.sock",
        "Unix socket externally started plugins connect to (root only); empty accepts none. "
        "A socket another live runtime serves is left to it (and NRI serves no socket).",
    )
    plugin_path: str = _opt(
        "/opt/nri/plugins",
        'Pre-installed plugins: each executable named "NN-name" (NN its two-digit index, the '
        "order plugins are called in) is started at start-up with a connected socket.",
    )
    plugin_config_path: str = _opt(
        "/etc/nri/conf.d",
        'Configuration of pre-installed plugins: "NN-name.conf", else "name.conf", is handed '
        "to the plugin as it starts.",
    )
    plugin_registration_timeout: float = _opt(
        5.0,
        "Seconds a plugin has to register once connected, and to take its initial "
        "synchronization with every existing pod and container.",
    )
    plugin_request_timeout: float = _opt(
        2.0,
        "Seconds a plugin has to answer one event; one that does not is disconnected and the "
        "CRI call goes on without it.",
    )


@dataclass
class CDIConfig:
    """[pycri.cdi]"""

    spec_dirs: list[str] = _opt_list(
        ["/etc/cdi", "/var/run/cdi"],
        "Directories of CDI (Container Device Interface) specs, *.json and *.yaml, for the "
        "devices containers request by name (vendor.com/class=name) in CDI_devices or "
        "cdi.k8s.io/* annotations. A device in a later directory overrides the same device "
        "in an earlier one; files are read again when they change.",
    )


@dataclass
class MetricsConfig:
    """[pycri.metrics]"""

    enable_metrics: bool = _opt(
        False, "Serve Prometheus metrics (pycri_* RPC latencies and codes, image pulls, OOM "
        "kills, pods and containers by state, process_*) at /metrics. Off: no port is opened.")
    metrics_host: str = _opt(
        "127.0.0.1", "Address the metrics endpoint binds (an IP address or a host name).")
    metrics_port: int = _opt(9090, "Port of the metrics endpoint (0 picks a free one, logged).")
    metrics_cert: str = _opt(
        "", "PEM certificate to serve metrics over HTTPS; empty serves plain HTTP (set with "
        "metrics_key).")
    metrics_key: str = _opt("", "PEM private key for metrics_cert.")


@dataclass
class PycriConfig:
    """[pycri]

    Where pycri keeps its state, and how much it logs (to stderr).
    """

    root: str = _opt("/var/lib/pycri", "Durable state (pods, containers, images); mode 0700.")
    runroot: str = _opt("/run/pycri", "Volatile state (bundles, exit files, sockets); mode 0700.")
    log_level: str = _opt("info", "One of: " + ", ".join(LOG_LEVELS) + ".")
    api: APIConfig = field(default_factory=APIConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    nri: NRIConfig = field(default_factory=NRIConfig)
    cdi: CDIConfig = field(default_factory=CDIConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    # Derived paths -------------------------------------------------------------------------
    @property
    def cni_cache_dir(self) -> Path:
        return Path(self.network.cache_dir or os.path.join(self.root, "cni-cache"))

    @property
    def socket_path(self) -> Path:
        listen = self.api.listen
        return Path(listen.removeprefix("unix://"))


Config = PycriConfig

TABLES: dict[str, type[Any]] = {
    "pycri": PycriConfig,
    "pycri.api": APIConfig,
    "pycri.runtime": RuntimeConfig,
    "pycri.image": ImageConfig,
    "pycri.network": NetworkConfig,
    "pycri.nri": NRIConfig,
    "pycri.cdi": CDIConfig,
    "pycri.metrics": MetricsConfig,
}


def _tables(cfg: PycriConfig) -> Iterator[tuple[str, Any]]:
    yield "pycri", cfg
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield f"pycri.{f.name}", value


def _scalar_fields(obj: Any) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(obj) if "doc" in f.metadata]


def _table_maps(obj: Any) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(obj) if "tables" in f.metadata]


def _check_type(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        want = "list of strings" if isinstance(default, list) else type(default).__name__
        raise ConfigError(f"{key}: expected {want}, got {value!r}")
    return value


def _apply(cfg: PycriConfig, data: Mapping[str, Any], source: str) -> None:
    top = data.get("pycri", {})
    unknown_top = set(data) - {"pycri"}
    if unknown_top:
        raise ConfigError(f"{source}: unknown table or key {sorted(unknown_top)[0]!r}")
    if not isinstance(top, dict):
        raise ConfigError(f"{source}: [pycri] must be a table")
    for name, obj in _tables(cfg):
        table = top if name == "pycri" else top.get(name.split(".", 1)[1], {})
        subtables = {n.split(".", 1)[1] for n in TABLES if "." in n} if name == "pycri" else set()
        _apply_table(obj, name, table, subtables, source)


def _apply_table(obj: Any, name: str, table: Any, skip: set[str], source: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name: f for f in _scalar_fields(obj)}
    maps = {f.name: f for f in _table_maps(obj)}
    for key, value in table.items():
        if key in skip:
            continue
        if key in maps:
            _apply_map(getattr(obj, key), maps[key], f"{name}.{key}", value, source)
            continue
        if key not in known:
            raise ConfigError(f"{source}: unknown key {name}.{key}")
        setattr(obj, key, _check_type(f"{name}.{key}", value, getattr(obj, key)))


def _apply_map(tables: dict[str, Any], spec: dataclasses.Field[Any], name: str, value: Any,
               source: str) -> None:
    """[name.ENTRY] tables: an entry named again (in a drop-in) is amended, not replaced."""
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}] must be a table of tables")
    make: type = spec.metadata["entry"]
    for entry, table in value.items():
        _apply_table(tables.setdefault(entry, make()), f"{name}.{entry}", table, set(), source)


def validate(cfg: PycriConfig) -> None:
    """Pure checks of the values; raises ConfigError naming the key."""
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"pycri.log_level: must be one of {', '.join(LOG_LEVELS)}")
    for key in ("root", "runroot"):
        if not os.path.isabs(getattr(cfg, key)):
            raise ConfigError(f"pycri.{key}: must be an absolute path")
    if not cfg.socket_path.is_absolute():
        raise ConfigError("pycri.api.listen: must be an absolute unix socket path")
    try:
        mode = int(cfg.api.socket_mode, 8)
    except ValueError:
        raise ConfigError("pycri.api.socket_mode: must be an octal mode like 0660") from None
    if mode & 0o007 or mode & ~0o777:
        raise ConfigError("pycri.api.socket_mode: must not grant access to others (e.g. 0600, 0660)")
    shared = cfg.socket_path.parent
    if cfg.api.socket_group and str(shared) in SHARED_DIRS:
        raise ConfigError(f"pycri.api.socket_group: {shared}, the socket's directory, would be "
                          "given to the group; put the socket in a directory of its own "
                          "(e.g. /run/pycri/pycri.sock)")
    if not 0 <= cfg.api.stream_port <= 65535:
        raise ConfigError("pycri.api.stream_port: must be 0..65535")
    if bool(cfg.api.stream_tls_cert) != bool(cfg.api.stream_tls_key):
        missing = "stream_tls_key" if cfg.api.stream_tls_cert else "stream_tls_cert"
        raise ConfigError(f"pycri.api.{missing}: TLS needs both stream_tls_cert and stream_tls_key")
    for key in ("stream_tls_cert", "stream_tls_key"):
        value = getattr(cfg.api, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"pycri.api.{key}: must be an absolute path")
    for key in ("stream_idle_timeout", "stream_token_ttl"):
        if getattr(cfg.api, key) <= 0:
            raise ConfigError(f"pycri.api.{key}: must be positive")
    if cfg.runtime.cgroup_driver not in CGROUP_DRIVERS:
        raise ConfigError(
            f"pycri.runtime.cgroup_driver: {cfg.runtime.cgroup_driver!r} is not supported "
            f"(supported: {', '.join(CGROUP_DRIVERS)})"
        )
    systemd = cfg.runtime.cgroup_driver == "systemd"
    parent = cfg.runtime.cgroup_parent()
    if systemd and not parent.endswith(".slice"):
        raise ConfigError("pycri.runtime.default_cgroup_parent: must be a slice (like "
                          "pycri.slice) with the systemd cgroup driver")
    if not systemd and not parent.startswith("/"):
        raise ConfigError("pycri.runtime.default_cgroup_parent: must start with / with the "
                          "cgroupfs driver")
    for item in cfg.runtime.default_sysctls:
        if "=" not in item:
            raise ConfigError(f"pycri.runtime.default_sysctls: {item!r} is not key=value")
    for key in ("runtime_timeout",):
        if getattr(cfg.runtime, key) <= 0:
            raise ConfigError(f"pycri.runtime.{key}: must be positive")
    monitor = cfg.runtime.monitor_cgroup()
    if systemd and monitor != "pod" and not monitor.endswith(".slice"):
        raise ConfigError('pycri.runtime.conmon_cgroup: must be "pod" or a slice with the '
                          "systemd cgroup driver")
    if not systemd and not monitor.startswith("/"):
        raise ConfigError("pycri.runtime.conmon_cgroup: must start with / with the cgroupfs "
                          "driver (or be empty)")
    try:
        check_apparmor_name(cfg.runtime.apparmor_profile)
    except ValueError as exc:
        raise ConfigError(f"pycri.runtime.apparmor_profile: {exc}") from None
    for d in cfg.runtime.hooks_dir:
        if not os.path.isabs(d):
            raise ConfigError(f"pycri.runtime.hooks_dir: {d!r} must be an absolute path")
    if cfg.runtime.pids_limit < 0:
        raise ConfigError("pycri.runtime.pids_limit: must not be negative (0 = no limit)")
    if cfg.network.plugin_timeout <= 0:
        raise ConfigError("pycri.network.plugin_timeout: must be positive")
    if not cfg.network.plugin_dirs:
        raise ConfigError("pycri.network.plugin_dirs: must name at least one directory")
    for cidr in cfg.network.masquerade_cidrs:
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"pycri.network.masquerade_cidrs: {exc}") from None
    _validate_handlers(cfg.runtime)
    _validate_nri(cfg.nri)
    for d in cfg.cdi.spec_dirs:
        if not os.path.isabs(d):
            raise ConfigError(f"pycri.cdi.spec_dirs: {d!r} is not an absolute path")
    _validate_metrics(cfg.metrics)


def _validate_handlers(runtime: RuntimeConfig) -> None:
    for name, table in runtime.handlers.items():
        key = f"pycri.runtime.handlers.{name}"
        if not _HANDLER_NAME.fullmatch(name):
            raise ConfigError(f"{key}: a handler name is a DNS label (RFC 1123: lower-case "
                              "letters, digits and '-', at most 63)")
        if table.runtime_root and not os.path.isabs(table.runtime_root):
            raise ConfigError(f"{key}.runtime_root: must be an absolute path")
        if not table.runtime_root and name in RUNROOT_DIRS:
            raise ConfigError(f"{key}.runtime_root: must be set, <runroot>/{name} is pycri's own")
        for item in table.allowed_annotations:
            if not item or "*" in item[:-1]:
                raise ConfigError(f"{key}.allowed_annotations: {item!r} is neither a key nor "
                                  'a prefix ending in "*"')
    default = runtime.default_handler()
    if default not in runtime.handlers:
        raise ConfigError(f"pycri.runtime.default_runtime: no [pycri.runtime.handlers.{default}] "
                          f"table (have: {', '.join(sorted(runtime.handlers))})")


def _validate_nri(nri: NRIConfig) -> None:
    for key in ("socket_path", "plugin_path", "plugin_config_path"):
        value = getattr(nri, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"pycri.nri.{key}: must be an absolute path")
    for key in ("plugin_registration_timeout", "plugin_request_timeout"):
        if getattr(nri, key) <= 0:
            raise ConfigError(f"pycri.nri.{key}: must be positive")


def _validate_metrics(metrics: MetricsConfig) -> None:
    if not metrics.metrics_host:
        raise ConfigError("pycri.metrics.metrics_host: must not be empty")
    if not 0 <= metrics.metrics_port <= 65535:
        raise ConfigError("pycri.metrics.metrics_port: must be 0..65535")
    if bool(metrics.metrics_cert) != bool(metrics.metrics_key):
        missing = "metrics_key" if metrics.metrics_cert else "metrics_cert"
        raise ConfigError(f"pycri.metrics.{missing}: TLS needs both metrics_cert and metrics_key")
    for key in ("metrics_cert", "metrics_key"):
        value = getattr(metrics, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"pycri.metrics.{key}: must be an absolute path")


def resolve_binary(key: str, value: str) -> str:
    """A configured binary as an absolute path: a path as is, a bare name through PATH."""
    if os.sep in value:
        if not os.access(value, os.X_OK):
            raise ConfigError(f"{key}: {value} is not an executable file")
        return value
    found = shutil.which(value)
    if not found:
        raise ConfigError(f"{key}: {value!r} not found in PATH")
    return found


def socket_gid(api: APIConfig) -> int | None:
    """The gid of [pycri.api] socket_group (None: not set); ConfigError for an unknown name."""
    group = api.socket_group
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"pycri.api.socket_group: no group {group!r} on this host") from None


def prepare(cfg: PycriConfig) -> None:
    """Side effects the daemon needs before serving: private state dirs and binary lookups."""
    for d in (cfg.root, cfg.runroot):
        Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)  # state dirs are never readable by others
    sock_dir = cfg.socket_path.parent
    sock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    gid = socket_gid(cfg.api)
    if gid is not None:
        # The group may pass through to the socket (by its name) and list nothing: what is in
        # runroot is 0700 directories and 0600 files of root's.
        os.chown(sock_dir, -1, gid)
        os.chmod(sock_dir, 0o710)  # noqa: S103 - search only, for that group
    cfg.runtime.conmon_path = resolve_binary("pycri.runtime.conmon_path", cfg.runtime.conmon_path)
    for name, table in cfg.runtime.handlers.items():
        # Every handler, used or not, as CRI-O does: a typo shows at start-up, not at the
        # first pod of its RuntimeClass.
        full = cfg.runtime.handler(name, cfg.runroot)
        key = f"pycri.runtime.handlers.{name}"
        table.runtime_path = resolve_binary(f"{key}.runtime_path", full.runtime_path)
        table.monitor_path = resolve_binary(f"{key}.monitor_path", full.monitor_path)


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> PycriConfig:
    """Defaults, then the file (if any), then ``<file>.d/*.conf`` in name order, then overrides.

    ``overrides`` maps dotted keys (``pycri.api.listen``) to values, e.g. from CLI flags.
    A missing default config file is fine; an explicitly named missing file is an error.
    """
    cfg = PycriConfig()
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    sources: list[Path] = []
    if path.exists():
        sources.append(path)
    elif explicit:
        raise ConfigError(f"{path}: no such config file")
    dropin = Path(str(path) + ".d")
    if dropin.is_dir():
        sources.extend(sorted(dropin.glob("*.conf")))
    for src in sources:
        try:
            data = tomllib.loads(src.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{src}: {exc}") from exc
        _apply(cfg, data, str(src))
    for dotted, value in (overrides or {}).items():
        table, _, key = dotted.rpartition(".")
        nested: dict[str, Any] = {key: value}
        for part in reversed(table.split(".")):
            nested = {part: nested}
        _apply(cfg, nested, "command line")
    validate(cfg)
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(cfg: PycriConfig | None = None) -> str:
    """The full commented config, every key with its doc; ``pycri config`` prints this."""
    cfg = cfg or PycriConfig()
    lines = ["# pycri configuration (TOML). Drop-ins: <this file>.d/*.conf, applied in name order."]
    for name, obj in _tables(cfg):
        lines += _render_table(name, obj)
        for f in _table_maps(obj):
            lines += ["", f"# [{name}.{f.name}.NAME]: {f.metadata['tables']}"]
            for entry, table in getattr(obj, f.name).items():
                lines += _render_table(f"{name}.{f.name}.{entry}", table)
    return "\n".join(lines) + "\n"


def _render_table(name: str, obj: Any) -> list[str]:
    lines = ["", f"[{name}]"]
    for f in _scalar_fields(obj):
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return lines
