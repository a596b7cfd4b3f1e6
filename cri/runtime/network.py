"""Pod networking through the cni library: readiness from the conf dir, ADD / DEL / CHECK with
the Kubernetes CNI_ARGS and runtimeConfig capabilities."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni import config as cniconfig
from cni import k8s
from cni.errors import CNIError, CNITimeout
from cni.network import CNINetwork
from cri.config import Config
from cri.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument
from cri.store.sandbox import Sandbox

log = logging.getLogger(__name__)

IFNAME = "eth0"
INGRESS = "kubernetes.io/ingress-bandwidth"
EGRESS = "kubernetes.io/egress-bandwidth"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str
    network: str


class PodNetwork:
    def __init__(self, config: Config) -> None:
        net = config.network
        self.conf_dir = Path(net.conf_dir)
        self.plugin_dirs = [Path(d) for d in net.plugin_dirs]
        self.cache_dir = config.cni_cache_dir
        self.netns_dir = Path(net.netns_dir)
        self.timeout = net.plugin_timeout
        self.pod_cidr = ""
        self._fingerprint: object = None
        self._network: CNINetwork | None = None
        self._why_not = "no CNI configuration loaded yet"

    def _reload(self) -> None:
        """Re-read the conf dir when it or a plugin dir changed (a stat of the dirs and the
        config files), and on every call while not ready. A config naming a plugin binary (or
        IPAM plugin) that no plugin dir has is skipped, as CRI-O does: until the binaries are
        installed the network is not ready, and the reason names the plugin and the dirs
        searched."""
        fp = cniconfig.fingerprint(self.conf_dir, self.plugin_dirs)
        # While not ready, look again even when nothing seems to have changed: mtimes come
        # from a coarse clock, so a plugin installed in the same tick as the last change to
        # its directory leaves the directory's mtime as it was, and not-ready must not stick.
        if fp == self._fingerprint and self._network is not None:
            return
        self._fingerprint = fp
        loaded = cniconfig.load_dir(self.conf_dir, self.plugin_dirs)
        if loaded.config is None:
            self._network = None
            reasons = "; ".join(loaded.reasons) or "the directory is empty or missing"
            why_not = f"no valid CNI network config in {self.conf_dir}: {reasons}"
            if why_not != self._why_not:  # once per reason, not on every status call
                log.warning("%s", why_not)
            self._why_not = why_not
            return
        self._why_not = ""
        self._network = CNINetwork(loaded.config, self.plugin_dirs, self.cache_dir,
                                   timeout=self.timeout)
        log.info("CNI network %r from %s", loaded.config.name, loaded.config.source)

    def readiness(self) -> Readiness:
        self._reload()
        if self._network is None:
            return Readiness(False, self._why_not, "")
        return Readiness(True, "", self._network.name)

    def _require(self) -> CNINetwork:
        self._reload()
        if self._network is None:
            raise FailedPrecondition(f"pod network is not ready: {self._why_not}")
        return self._network

    @staticmethod
    def _args(pod: Sandbox) -> tuple[dict[str, str], dict[str, Any]]:
        md, cfg = pod.config.metadata, pod.config
        try:
            args = k8s.cni_args(namespace=md.namespace, name=md.name, infra_id=pod.meta.infra_id,
                                uid=md.uid)
            caps = k8s.capability_args(
                port_mappings=[
                    k8s.PortMapping(host_port=pm.host_port, container_port=pm.container_port,
                                    protocol=("tcp", "udp", "sctp")[pm.protocol],
                                    host_ip=pm.host_ip)
                    for pm in cfg.port_mappings if pm.host_port > 0
                ],
                dns_servers=list(cfg.dns_config.servers),
                dns_searches=list(cfg.dns_config.searches),
                dns_options=list(cfg.dns_config.options),
                ingress_bandwidth=cfg.annotations.get(INGRESS),
                egress_bandwidth=cfg.annotations.get(EGRESS),
                cgroup_path=pod.meta.cgroup_parent,
            )
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        return args, caps

    async def setup(self, pod: Sandbox) -> list[str]:
        """CNI ADD; returns the pod IPs (primary first)."""
        network = self._require()
        args, caps = self._args(pod)
        try:
            result = await network.add(pod.meta.infra_id, Path(pod.meta.netns_path), IFNAME,
                                       args=args, capability_args=caps)
        except CNITimeout as exc:
            raise DeadlineExceeded(f"CNI ADD for pod {pod.id}: {exc}") from exc
        except CNIError as exc:
            raise Internal(f"CNI ADD for pod {pod.id} failed: {exc}") from exc
        return [str(ip) for ip in result.pod_ips(IFNAME)]

    async def teardown(self, pod: Sandbox) -> None:
        """CNI DEL with the cached result; fine when the netns or an earlier ADD is gone.

        DEL goes to the network the pod was added to, rebuilt from the CNI cache (as libcni
        does), even if the conf dir changed since; the current network only without a cache.
        """
        network = CNINetwork.from_cache(self.cache_dir, pod.meta.infra_id, IFNAME,
                                        self.plugin_dirs, timeout=self.timeout)
        if network is None:
            self._reload()
            network = self._network
        if network is None:
            log.warning("no CNI config or cache for pod %s; skipping CNI DEL", pod.id)
            return
        args, caps = self._args(pod)
        try:
            await network.delete(pod.meta.infra_id, Path(pod.meta.netns_path), IFNAME,
                                 args=args, capability_args=caps)
        except CNITimeout as exc:
            raise DeadlineExceeded(f"CNI DEL for pod {pod.id}: {exc}") from exc
        except CNIError as exc:
            raise Internal(f"CNI DEL for pod {pod.id} failed: {exc}") from exc

    async def check(self, pod: Sandbox) -> str | None:
        """CNI CHECK of a pod's network; None when healthy, else why not (for the log)."""
        network = CNINetwork.from_cache(self.cache_dir, pod.meta.infra_id, IFNAME,
                                        self.plugin_dirs, timeout=self.timeout)
        if network is None:
            return "no cached CNI result"
        args, caps = self._args(pod)
        try:
            await network.check(pod.meta.infra_id, Path(pod.meta.netns_path), IFNAME,
                                args=args, capability_args=caps)
        except CNIError as exc:
            return str(exc)
        return None

    def cached_result(self, pod: Sandbox) -> Any:
        if self._network is None or not pod.meta.netns_path:
            return None
        return self._network.cached_result(pod.meta.infra_id, IFNAME)
