"""One CNI network (a configuration list) and the ADD / DEL / CHECK operations on it, with the
libcni-compatible result cache.

Callers serialise operations per (container id, ifname); different containers may run
concurrently (IPAM plugins such as host-local lock their own state).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cni import cache
from cni.config import NetworkConfigList, parse_conflist, version_tuple
from cni.errors import CNIConfigError, CNIError
from cni.invoke import encode_args, exec_plugin, find_plugin
from cni.result import Result

log = logging.getLogger(__name__)

_NO_ARGS: Mapping[str, Any] = MappingProxyType({})


def _is_netns(path: str) -> bool:
    # Namespace files (bind mounts under /run/netns, /proc/<pid>/ns/net) all live on the one
    # nsfs superblock, so comparing st_dev with our own netns file recognises them.
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _del_netns(netns_path: Path | str | None) -> str:
    """CNI_NETNS for DEL: the path while it still is a network namespace, else empty.

    CNI spec 1.0.0 makes CNI_NETNS optional for DEL, and the reference plugins (bridge,
    host-local via bridge, loopback, portmap, bandwidth) release what they hold without it.
    A vanished path is tolerated by them too, but a stale path that is no longer an nsfs mount
    (a plain file left behind) makes bridge fail *before* it frees the IPAM lease."""
    text = "" if netns_path is None else str(netns_path)
    if text and not _is_netns(text):
        log.debug("CNI DEL: %s is no longer a network namespace; passing an empty CNI_NETNS", text)
        return ""
    return text


class CNINetwork:
    def __init__(self, config: NetworkConfigList, plugin_dirs: Sequence[Path], cache_dir: Path, *,
                 timeout: float) -> None:
        """timeout: the deadline of each plugin execution, in seconds."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.config = config
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"CNINetwork({self.name!r} from {str(self.config.source)!r})"

    # -- plugin configuration -----------------------------------------------------------------

    def plugin_config(self, plugin: Mapping[str, Any], capability_args: Mapping[str, Any],
                      prev_result: Mapping[str, Any] | None) -> dict[str, Any]:
        """What one plugin gets on stdin (CNI spec 1.0.0 "Deriving execution configuration from
        plugin configuration"): its own config with the list's name and cniVersion, prevResult,
        and runtimeConfig holding only the capability args the plugin declares in
        "capabilities" (CONVENTIONS.md "Dynamic Plugin specific fields")."""
        conf = copy.deepcopy(dict(plugin))
        conf["name"] = self.config.name
        conf["cniVersion"] = self.config.cni_version
        if prev_result is not None:
            conf["prevResult"] = copy.deepcopy(dict(prev_result))
        else:
            conf.pop("prevResult", None)
        declared = plugin.get("capabilities") or {}
        runtime = {key: copy.deepcopy(value) for key, value in capability_args.items()
                   if declared.get(key) is True}
        if runtime:
            conf["runtimeConfig"] = runtime
        return conf

    async def _run(self, command: str, plugin: Mapping[str, Any], container_id: str, netns: str,
                   ifname: str, args: Mapping[str, str], capability_args: Mapping[str, Any],
                   prev_result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        path = find_plugin(str(plugin["type"]), self.plugin_dirs)
        conf = self.plugin_config(plugin, capability_args, prev_result)
        return await exec_plugin(path, command, conf, container_id=container_id, netns=netns,
                                 ifname=ifname, args=args, plugin_dirs=self.plugin_dirs,
                                 time_limit=self.timeout)

    async def _store(self, container_id: str, netns: str, ifname: str, args: Mapping[str, str],
                     capability_args: Mapping[str, Any], result: dict[str, Any] | None) -> None:
        entry = cache.CacheEntry(container_id=container_id, ifname=ifname, network_name=self.name,
                                 config=self.config.data, cni_args=cache.args_pairs(args),
                                 capability_args=dict(capability_args), result=result, netns=netns)
        # fsync can take a while on a busy disk: keep it off the event loop.
        await asyncio.to_thread(cache.write_entry, self.cache_dir, entry)

    # -- operations ---------------------------------------------------------------------------

    async def add(self, container_id: str, netns_path: Path | str, ifname: str = "eth0", *,
                  args: Mapping[str, str] = _NO_ARGS,
                  capability_args: Mapping[str, Any] = _NO_ARGS) -> Result:
        """ADD through every plugin in order, each getting the previous one's result as
        prevResult; the last result is cached and returned.

        A failed ADD may leave partial allocations (a veth, an IPAM lease, iptables rules): the
        caller MUST call delete() after any exception here, as CRI-O and containerd do."""
        netns = str(netns_path)
        if netns in ("", "."):  # str(Path("")) is "."
            raise CNIError("ADD needs a network namespace path")
        # Refuse bad ids and CNI_ARGS before anything is recorded or run.
        cache.entry_path(self.cache_dir, self.name, container_id, ifname)
        encode_args(args)
        # Record the config before anything runs, so a DEL after a crash mid-ADD still has it.
        await self._store(container_id, netns, ifname, args, capability_args, None)
        prev: dict[str, Any] | None = None
        for plugin in self.config.plugins:
            out = await self._run("ADD", plugin, container_id, netns, ifname, args, capability_args,
                                  prev)
            if out is None:
                raise CNIError(f"plugin {plugin['type']!r} ADD printed no result")
            prev = out
        assert prev is not None  # plugins is never empty
        # Cache the raw result before parsing it: even a result we cannot read is DEL's prevResult.
        await self._store(container_id, netns, ifname, args, capability_args, prev)
        return Result.parse(prev)

    async def delete(self, container_id: str, netns_path: Path | str | None, ifname: str = "eth0", *,
                     args: Mapping[str, str] | None = None,
                     capability_args: Mapping[str, Any] | None = None) -> None:
        """DEL through every plugin in reverse order; idempotent.

        prevResult is the cached ADD result (CNI >= 0.4.0). args / capability_args default to
        the ones cached at ADD (libcni's GetNetworkListCachedConfig), so a restarted runtime
        can DEL without rebuilding them. A missing cache entry or a deleted netns is fine.
        Every plugin is tried even when an earlier one fails: the first error is raised
        afterwards and the cache entry kept for a retry; on success it is removed."""
        netns = _del_netns(netns_path)
        entry = cache.read_entry(self.cache_dir, self.name, container_id, ifname)
        if args is None:
            args = dict(entry.cni_args) if entry is not None else {}
        if capability_args is None:
            capability_args = entry.capability_args if entry is not None else {}
        prev = None
        if entry is not None and version_tuple(self.config.cni_version) >= (0, 4, 0):
            prev = entry.result  # CNI spec 0.4.0 added prevResult to DEL
        first_error: CNIError | None = None
        for plugin in reversed(self.config.plugins):
            try:
                await self._run("DEL", plugin, container_id, netns, ifname, args, capability_args,
                                prev)
            except CNIError as exc:
                log.warning("CNI DEL of %s/%s in network %s: %s", container_id, ifname, self.name, exc)
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error
        cache.remove_entry(self.cache_dir, self.name, container_id, ifname)

    async def check(self, container_id: str, netns_path: Path | str, ifname: str = "eth0", *,
                    args: Mapping[str, str] | None = None,
                    capability_args: Mapping[str, Any] | None = None) -> None:
        """CHECK through every plugin in order with the cached result as prevResult.

        args / capability_args default to the ones cached at ADD: CHECK verifies what ADD set
        up (the bandwidth plugin of containernetworking-plugins 1.1 even panics on a CHECK
        without its bandwidth args). CHECK exists from CNI 0.4.0 on: for older cniVersions,
        and for lists with "disableCheck", this is a no-op. Raises CNIError when no ADD result
        is cached."""
        if version_tuple(self.config.cni_version) < (0, 4, 0) or self.config.disable_check:
            return
        netns = str(netns_path)
        if netns in ("", "."):
            raise CNIError("CHECK needs a network namespace path")
        entry = cache.read_entry(self.cache_dir, self.name, container_id, ifname)
        result = None if entry is None else entry.result
        if entry is None or result is None:
            raise CNIError(f"CHECK of {container_id}/{ifname} in network {self.name}: "
                           "no cached ADD result")
        if args is None:
            args = dict(entry.cni_args)
        if capability_args is None:
            capability_args = entry.capability_args
        for plugin in self.config.plugins:
            if _unshaped_bandwidth(plugin, capability_args):
                continue
            await self._run("CHECK", plugin, container_id, netns, ifname, args, capability_args,
                            result)

    # -- cache --------------------------------------------------------------------------------

    def cached_result(self, container_id: str, ifname: str = "eth0") -> dict[str, Any] | None:
        """The raw result of the last successful ADD (Result.parse() makes it typed)."""
        entry = cache.read_entry(self.cache_dir, self.name, container_id, ifname)
        return None if entry is None else entry.result

    @classmethod
    def from_cache(cls, cache_dir: Path, container_id: str, ifname: str, plugin_dirs: Sequence[Path],
                   *, timeout: float) -> CNINetwork | None:
        """The network an earlier ADD used, rebuilt from the config stored in its cache entry,
        so DEL runs the plugins ADD ran even if the conf dir changed since (as CRI-O does)."""
        entry = cache.find_entry(cache_dir, container_id, ifname)
        if entry is None:
            return None
        source = cache.entry_path(cache_dir, entry.network_name, container_id, ifname)
        try:
            config = parse_conflist(entry.config, source)
        except CNIConfigError as exc:
            log.warning("unusable network config in CNI cache %s: %s", source, exc)
            return None
        if config.name != entry.network_name:
            log.warning("CNI cache %s holds the config of network %r", source, config.name)
            return None
        return cls(config, plugin_dirs, cache_dir, timeout=timeout)


_RATE_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


def _unshaped_bandwidth(plugin: Mapping[str, Any], capability_args: Mapping[str, Any]) -> bool:
    """A bandwidth plugin with no rate, neither in its config nor as the bandwidth capability.

    It set nothing up at ADD, so there is nothing to CHECK, and containernetworking-plugins'
    bandwidth up to 1.1 (Debian 12's) dereferences nil in CHECK then: a panic on every pod
    without bandwidth annotations.
    """
    if plugin.get("type") != "bandwidth":
        return False
    declared = (plugin.get("capabilities") or {}).get("bandwidth") is True
    dynamic = declared and bool(capability_args.get("bandwidth"))
    return not dynamic and not any(plugin.get(key) for key in _RATE_KEYS)

