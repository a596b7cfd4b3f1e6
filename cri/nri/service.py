"""NRI, runtime side: the plugins pycri serves, how they join, and the calls that relay events.

Plugins join two ways: pre-installed ones are started from plugin_path at start-up, external
ones connect to socket_path. Either registers, is configured, then synchronized with every pod
and container under the sync gate (cri/nri/gate.py) before it gets events. Events go to the
subscribed plugins one at a time in index order (then name order), so a plugin sees what those
before it changed. A plugin that disconnects is forgotten.

The runtime is reached only through ``Host``, handed in at start (the RPC modules call in,
NRI never imports them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from cri.config import NRIConfig
from cri.nri import launch, names
from cri.nri.api import api_pb2 as nri
from cri.nri.gate import SyncGate
from cri.nri.owners import Conflict
from cri.nri.plugin import Plugin, PluginError
from cri.nri.updates import Updates
from cri.unix_socket import SocketInUse, claim_socket

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
SHUTDOWN_TIMEOUT = 1.0  # seconds each plugin gets to take Shutdown as the daemon stops


class Host(Protocol):
    """What NRI needs of the runtime."""

    async def snapshot(self) -> tuple[list[nri.PodSandbox], list[nri.Container]]:
        """Every pod and container, as a joining plugin is synchronized with them."""
        ...

    async def apply_updates(self, updates: Sequence[nri.ContainerUpdate],
                            evictions: Sequence[nri.ContainerEviction]
                            ) -> list[nri.ContainerUpdate]:
        """Update other containers' resources and evict containers, as plugins asked; the
        updates that failed (those not marked ignore_failure are logged)."""
        ...


class NRI:
    def __init__(self, config: NRIConfig, runtime_name: str, runtime_version: str) -> None:
        self.config = config
        self.gate = SyncGate()
        self._runtime = (runtime_name, runtime_version)
        self._plugins: list[Plugin] = []  # synchronized: these get events
        self._host: Host | None = None
        self._server: asyncio.Server | None = None
        self._socket: Path | None = None  # the socket this daemon serves (and removes)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def plugins(self) -> list[Plugin]:
        return [p for p in self._plugins if not p.closed]

    def subscribed(self, event: int) -> bool:
        """Whether any plugin takes ``event`` (callers skip building requests otherwise)."""
        return any(p.subscribed(event) for p in self._plugins)

    # Start and stop ---------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        """Start the pre-installed plugins (each bounded by the timeouts; one that fails is
        logged and left out), then listen for external ones."""
        if not self.config.enable:
            log.info("NRI is disabled")
            return
        self._host = host
        installed = await asyncio.to_thread(launch.discover, Path(self.config.plugin_path),
                                            Path(self.config.plugin_config_path))
        for entry in installed:
            try:
                process, sock = await launch.launch(entry)
            except OSError as exc:
                log.warning("NRI: cannot start %s: %s", entry.path, exc)
                continue
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            plugin = Plugin(reader, writer, idx=entry.idx, name=entry.name,
                            config=entry.config, process=process, on_update=self._on_update)
            await self._join(plugin)
        if self.config.socket_path:
            await self._listen(Path(self.config.socket_path))

    async def _listen(self, path: Path) -> None:
        try:
            await asyncio.to_thread(claim_socket, path, "NRI serves no socket")
        except (SocketInUse, OSError) as exc:
            log.error("NRI: not accepting external plugins: %s", exc)
            return
        # Root only (a plugin may change every container): the mode is set between bind and
        # listen, before anyone can connect (no process-wide umask dance).
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(16)
            self._server = await asyncio.start_unix_server(self._accept, sock=sock)
        except OSError as exc:  # e.g. a path longer than a unix socket address holds
            sock.close()
            log.error("NRI: not accepting external plugins: %s: %s", path, exc)
            return
        self._socket = path
        log.info("NRI: external plugins may connect to %s", path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.unlink()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        plugins, self._plugins = self._plugins, []
        await asyncio.gather(*(p.shutdown(SHUTDOWN_TIMEOUT) for p in plugins))
        await asyncio.gather(*(p.wait_closed() for p in plugins))

    # Joining ----------------------------------------------------------------------------
    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        plugin = Plugin(reader, writer, on_update=self._on_update)
        self._spawn(self._join(plugin))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join(self, plugin: Plugin) -> None:
        """Register, configure and synchronize ``plugin``; then it gets events until it goes."""
        cfg = self.config
        try:
            await plugin.start(*self._runtime,
                               registration_timeout=cfg.plugin_registration_timeout,
                               request_timeout=cfg.plugin_request_timeout)
            updates = await self._synchronize(plugin)
        except PluginError as exc:
            log.error("NRI: %s", exc)
            plugin.close()
            await plugin.wait_closed()
            return
        except BaseException:
            plugin.close()
            raise
        log.info("NRI: %r joined; plugins in order: %s", plugin,
                 ", ".join(p.full_name for p in self._plugins))
        self._spawn(self._forget_when_gone(plugin))
        if updates:
            await self._apply(plugin, updates, [])

    async def _synchronize(self, plugin: Plugin) -> list[nri.ContainerUpdate]:
        """The snapshot and the plugin's admission under the gate, held exclusively: no pod or
        container comes or goes between the two (see gate.py)."""
        assert self._host is not None
        async with self.gate.exclusive():
            pods, containers = await self._host.snapshot()
            # The registration timeout, not the request one: synchronizing is the last step
            # of joining, and a plugin reconciling much state needs longer than for one event.
            updates = await plugin.synchronize(pods, containers,
                                               self.config.plugin_registration_timeout)
            self._plugins.append(plugin)
            self._plugins.sort(key=lambda p: (p.idx, p.name))
        return updates

    async def _forget_when_gone(self, plugin: Plugin) -> None:
        await plugin.wait_closed()
        if plugin in self._plugins:
            self._plugins.remove(plugin)
            log.info("NRI: %r disconnected", plugin)

    # Events -----------------------------------------------------------------------------
    async def relay(self, event: int, request: Message) -> list[tuple[Plugin, Message]]:
        """``request`` to every plugin subscribed to ``event``, in order: their replies
        (none from plugins that went away meanwhile); PluginError if one refused."""
        return [r async for r in self.relay_each(event, lambda: request)]

    async def relay_each(self, event: int, request: Callable[[], Message]
                         ) -> AsyncIterator[tuple[Plugin, Message]]:
        """As ``relay``, yielding each reply before the next plugin is called, with the
        request built anew for each (from what earlier replies changed)."""
        method = names.method(event)
        rtype = names.response_type(method)
        for plugin in list(self._plugins):
            if plugin.subscribed(event):
                reply = await plugin.call(method, request(), rtype)
                if reply is not None:
                    yield plugin, reply

    async def apply(self, updates: Updates) -> None:
        """Carry out the updates and evictions plugins asked for in their replies."""
        if updates.updates or updates.evictions:
            await self._apply(None, updates.updates, updates.evictions)

    async def _apply(self, plugin: Plugin | None, updates: Sequence[nri.ContainerUpdate],
                     evictions: Sequence[nri.ContainerEviction]) -> list[nri.ContainerUpdate]:
        assert self._host is not None
        failed = await self._host.apply_updates(updates, evictions)
        for u in failed:
            if not u.ignore_failure:
                log.warning("NRI: update of container %s%s failed", u.container_id,
                            f" asked by {plugin.full_name}" if plugin else "")
        return failed

    async def _on_update(self, plugin: Plugin, updates: list[nri.ContainerUpdate],
                         evictions: list[nri.ContainerEviction]) -> list[nri.ContainerUpdate]:
        """A plugin's own UpdateContainers request."""
        merged = Updates()
        try:
            merged.add(plugin.full_name, updates, evictions)
        except Conflict as exc:
            log.warning("NRI: %s", exc)
            return updates
        log.info("NRI: %r asks to update %d and evict %d containers", plugin, len(updates),
                 len(evictions))
        return await self._apply(plugin, merged.updates, merged.evictions)
