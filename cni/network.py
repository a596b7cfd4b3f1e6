"""One CNI network (a configuration list) and the ADD / DEL / CHECK operations on it, with the
libcni-compatible result cache."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cni import cache
from cni.config import NetworkConfigList, parse_conflist, version_tuple
from cni.errors import CNIConfigError, CNIError
from cni.invoke import exec_plugin, find_plugin
from cni.result import Result

log = logging.getLogger(__name__)


def _netns_arg(netns_path: Path | str | None) -> str:
    text = "" if netns_path is None else str(netns_path)
    return "" if text in ("", ".") else text


class CNINetwork:
    def __init__(self, config: NetworkConfigList, plugin_dirs: Sequence[Path], cache_dir: Path, *,
                 timeout: float) -> None:
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
        """What one plugin gets on stdin: its own config plus the network name and cniVersion,
        prevResult, and runtimeConfig limited to the capabilities it declares."""
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
        ptype = str(plugin["type"])
        path = find_plugin(ptype, self.plugin_dirs)
        conf = self.plugin_config(plugin, capability_args, prev_result)
        return await exec_plugin(path, command, conf, container_id=container_id, netns=netns,
                                 ifname=ifname, args=args, plugin_dirs=self.plugin_dirs,
                                 time_limit=self.timeout)

    def _entry(self, container_id: str, netns: str, ifname: str, args: Mapping[str, str],
               capability_args: Mapping[str, Any], result: dict[str, Any] | None) -> cache.CacheEntry:
        return cache.CacheEntry(container_id=container_id, ifname=ifname, network_name=self.name,
                                config=self.config.data, cni_args=cache.args_pairs(args),
                                capability_args=dict(capability_args), result=result, netns=netns)

    # -- operations ---------------------------------------------------------------------------

    async def add(self, container_id: str, netns_path: Path, ifname: str, *,
                  args: Mapping[str, str], capability_args: Mapping[str, Any]) -> Result:
        """ADD through every plugin in order; the last result is cached and returned."""
        netns = _netns_arg(netns_path)
        if not netns:
            raise CNIError("ADD needs a network namespace path")
        # Record the config before anything runs, so a DEL after a crash mid-ADD still has it.
        cache.write_entry(self.cache_dir,
                          self._entry(container_id, netns, ifname, args, capability_args, None))
        prev: dict[str, Any] | None = None
        for plugin in self.config.plugins:
            out = await self._run("ADD", plugin, container_id, netns, ifname, args, capability_args,
                                  prev)
            if out is None:
                raise CNIError(f"plugin {plugin['type']!r} ADD printed no result")
            prev = out
        assert prev is not None  # plugins is never empty
        result = Result.parse(prev)
        cache.write_entry(self.cache_dir,
                          self._entry(container_id, netns, ifname, args, capability_args, prev))
        return result

    async def delete(self, container_id: str, netns_path: Path | None, ifname: str, *,
                     args: Mapping[str, str], capability_args: Mapping[str, Any]) -> None:
        """DEL through every plugin in reverse order. Every plugin is tried even when an earlier
        one fails (the first error is raised afterwards and the cache entry kept for a retry)."""
        netns = _netns_arg(netns_path)
        entry = cache.read_entry(self.cache_dir, self.name, container_id, ifname)
        prev = None
        if entry is not None and version_tuple(self.config.cni_version) >= (0, 4, 0):
            prev = entry.result
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

    async def check(self, container_id: str, netns_path: Path, ifname: str, *,
                    args: Mapping[str, str], capability_args: Mapping[str, Any]) -> None:
        """CHECK through every plugin in order with the cached result as prevResult. A no-op for
        cniVersion < 0.4.0 (CHECK does not exist there) and for lists with disableCheck."""
        if version_tuple(self.config.cni_version) < (0, 4, 0) or self.config.disable_check:
            return
        netns = _netns_arg(netns_path)
        if not netns:
            raise CNIError("CHECK needs a network namespace path")
        result = self.cached_result(container_id, ifname)
        if result is None:
            raise CNIError(f"CHECK of {container_id}/{ifname} in network {self.name}: "
                           "no cached ADD result")
        for plugin in self.config.plugins:
            await self._run("CHECK", plugin, container_id, netns, ifname, args, capability_args,
                            result)

    # -- cache --------------------------------------------------------------------------------

    def cached_result(self, container_id: str, ifname: str) -> dict[str, Any] | None:
        entry = cache.read_entry(self.cache_dir, self.name, container_id, ifname)
        return None if entry is None else entry.result

    @classmethod
    def from_cache(cls, cache_dir: Path, container_id: str, ifname: str, plugin_dirs: Sequence[Path],
                   *, timeout: float) -> CNINetwork | None:
        """The network an earlier ADD used, rebuilt from the config stored in its cache entry."""
        entry = cache.find_entry(cache_dir, container_id, ifname)
        if entry is None:
            return None
        source = cache.entry_path(cache_dir, entry.network_name, container_id, ifname)
        try:
            config = parse_conflist(entry.config, source)
        except CNIConfigError as exc:
            log.warning("unusable network config in CNI cache %s: %s", source, exc)
            return None
        return cls(config, plugin_dirs, cache_dir, timeout=timeout)
