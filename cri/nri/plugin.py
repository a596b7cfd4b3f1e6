"""One NRI plugin, runtime side: its multiplexed connection, registration, configuration,
synchronization and event calls, each under its timeout.

On the trunk the runtime is a ttrpc client of the plugin's service (connection 1) and serves
the runtime service (connection 2), where the plugin registers and may ask for container
updates at any time. Failures follow the NRI adaptation: an error a plugin answers an event
with is the plugin's verdict and fails the CRI call (PluginError); a plugin that does not
answer in time, or whose connection breaks, is closed and forgotten, and the CRI call goes on
without it. Nothing a plugin sends reaches the daemon as an exception of another kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cri.nri import names
from cri.nri.api import api_pb2 as nri
from cri.nri.mux import Mux
from cri.nri.mux_frames import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN
from cri.nri.ttrpc_client import TtrpcClient
from cri.nri.ttrpc_frames import MAX_MESSAGE_LENGTH
from cri.nri.ttrpc_server import TtrpcServer, unary
from cri.nri.ttrpc_status import TtrpcError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
# A plugin's UpdateContainers request: (updates, evictions) -> the updates that failed.
UpdateHandler = Callable[["Plugin", list[nri.ContainerUpdate], list[nri.ContainerEviction]],
                         Awaitable[list[nri.ContainerUpdate]]]

# A Synchronize message's share of ttrpc's 4 MiB: the rest is the envelope and the repeated
# fields' tags. Bigger snapshots go in several messages (more = true).
SYNC_BUDGET = MAX_MESSAGE_LENGTH - 64 * 1024
# Events without a reply of their own, which NRI plugins built before the per-event methods
# existed take as StateChange.
_STATE_CHANGE: dict[str, nri.Event.ValueType] = {
    "RunPodSandbox": nri.RUN_POD_SANDBOX, "StopPodSandbox": nri.STOP_POD_SANDBOX,
    "RemovePodSandbox": nri.REMOVE_POD_SANDBOX, "PostCreateContainer": nri.POST_CREATE_CONTAINER,
    "StartContainer": nri.START_CONTAINER, "PostStartContainer": nri.POST_START_CONTAINER,
    "PostUpdateContainer": nri.POST_UPDATE_CONTAINER, "RemoveContainer": nri.REMOVE_CONTAINER,
}
# Errors that mean the plugin is gone or hung, rather than that it refused the request.
_FATAL = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


class PluginError(Exception):
    """A plugin refused a request, or could not be started."""


class Plugin:
    """Create it inside the event loop: it starts serving the connection at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 idx: str = "", name: str = "", config: str = "",
                 process: asyncio.subprocess.Process | None = None,
                 on_update: UpdateHandler | None = None) -> None:
        self.idx, self.name, self.config = idx, name, config
        self.process = process  # None: an external plugin, which names itself on registering
        self.events = 0
        self.request_timeout = 2.0
        self._on_update = on_update
        self._legacy: set[str] = set()  # methods the plugin lacks: sent as StateChange
        self._registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._mux = Mux(reader, writer)
        client_conn, server_conn = self._mux.open(PLUGIN_SERVICE_CONN), \
            self._mux.open(RUNTIME_SERVICE_CONN)
        self._client = TtrpcClient(client_conn)
        server = TtrpcServer()
        server.register(names.RUNTIME_SERVICE, "RegisterPlugin",
                        unary(nri.RegisterPluginRequest, self._register))
        server.register(names.RUNTIME_SERVICE, "UpdateContainers",
                        unary(nri.UpdateContainersRequest, self._update_containers))
        self._serving = asyncio.create_task(server.serve(server_conn), name="nri-runtime-service")
        self._mux.start()
        self._reaper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        kind = "external" if self.process is None else f"pid {self.process.pid}"
        return f"NRI plugin {self.full_name} ({kind})"

    @property
    def full_name(self) -> str:
        return f"{self.idx}-{self.name}" if self.name else "(unregistered)"

    @property
    def closed(self) -> bool:
        return self._mux.closed

    def subscribed(self, event: int) -> bool:
        return bool(self.events & names.bit(event)) and not self.closed

    # Start-up ---------------------------------------------------------------------------
    async def start(self, runtime_name: str, runtime_version: str, *,
                    registration_timeout: float, request_timeout: float) -> None:
        """Wait for the plugin to register, then configure it; PluginError otherwise (the
        caller closes it)."""
        self.request_timeout = request_timeout
        closed = asyncio.ensure_future(self._mux.wait_closed())
        try:
            await asyncio.wait({self._registered, closed}, timeout=registration_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not self._registered.done():
            why = "closed its connection" if self.closed else \
                f"did not register within {registration_timeout}s"
            raise PluginError(f"{self!r} {why}")
        self._registered.result()  # an invalid name or index
        request = nri.ConfigureRequest(
            config=self.config, runtime_name=runtime_name, runtime_version=runtime_version,
            registration_timeout=int(registration_timeout * 1000),
            request_timeout=int(request_timeout * 1000), NRI_version=names.NRI_VERSION)
        try:
            reply = await self._client.call_message(names.PLUGIN_SERVICE, "Configure", request,
                                                    nri.ConfigureResponse,
                                                    timeout=request_timeout)
        except TtrpcError as exc:
            raise PluginError(f"{self!r}: Configure failed: {exc}") from exc
        events = reply.events & 0xFFFFFFFF
        if events & ~names.VALID_EVENTS:
            raise PluginError(f"{self!r} subscribed to unknown events {events:#x}")
        self.events = events or names.VALID_EVENTS
        log.info("%r subscribed to %s", self, names.event_names(self.events))

    async def synchronize(self, pods: list[nri.PodSandbox], containers: list[nri.Container],
                          timeout: float) -> list[nri.ContainerUpdate]:  # noqa: ASYNC109
        """Send the snapshot, in several messages when it is too big for one; the updates the
        plugin asks for in return."""
        batches = _batches(pods, containers)
        try:
            async with asyncio.timeout(timeout):
                for i, (batch_pods, batch_ctrs) in enumerate(batches):
                    more = i < len(batches) - 1
                    reply = await self._client.call_message(
                        names.PLUGIN_SERVICE, "Synchronize",
                        nri.SynchronizeRequest(pods=batch_pods, containers=batch_ctrs, more=more),
                        nri.SynchronizeResponse, timeout=timeout)
                    if more and (reply.update or not reply.more):
                        raise PluginError(f"{self!r} does not take a split Synchronize")
        except TimeoutError:
            raise PluginError(f"{self!r}: Synchronize took over {timeout}s") from None
        except TtrpcError as exc:
            raise PluginError(f"{self!r}: Synchronize failed: {exc}") from exc
        return list(reply.update)

    # Events -----------------------------------------------------------------------------
    async def call(self, method: str, request: Message, response_type: type[M]) -> M | None:
        """The plugin's answer to an event; None when it is gone (now closed); PluginError
        when it refused."""
        if method in self._legacy:
            return await self._state_change(method, request, response_type)
        try:
            return await self._client.call_message(names.PLUGIN_SERVICE, method, request,
                                                   response_type, timeout=self.request_timeout)
        except TtrpcError as exc:
            if exc.code is grpc.StatusCode.UNIMPLEMENTED and method in _STATE_CHANGE:
                self._legacy.add(method)
                return await self._state_change(method, request, response_type)
            self._failed(method, exc)
            return None

    async def _state_change(self, method: str, request: Message,
                            response_type: type[M]) -> M | None:
        event = nri.StateChangeEvent(event=_STATE_CHANGE[method])
        for field in ("pod", "container"):
            if field in request.DESCRIPTOR.fields_by_name and request.HasField(field):
                getattr(event, field).CopyFrom(getattr(request, field))
        try:
            await self._client.call_message(names.PLUGIN_SERVICE, "StateChange", event,
                                            nri.Empty, timeout=self.request_timeout)
        except TtrpcError as exc:
            self._failed(method, exc)
            return None
        return response_type()

    def _failed(self, method: str, exc: TtrpcError) -> None:
        """Close a plugin that is gone or hung; raise the refusal of one that answered."""
        if exc.code in _FATAL:
            log.error("%r failed %s (%s); disconnecting it", self, method, exc)
            self.close()
            return
        raise PluginError(f"NRI plugin {self.full_name} failed {method}: {exc.message}") from exc

    async def shutdown(self, timeout: float) -> None:  # noqa: ASYNC109
        """Tell the plugin the runtime is going away (best effort), then close."""
        if not self.closed:
            with contextlib.suppress(TtrpcError):
                await self._client.call(names.PLUGIN_SERVICE, "Shutdown",
                                        nri.Empty().SerializeToString(), timeout=timeout)
        self.close()

    def close(self) -> None:
        """Drop the connection and kill the process of a plugin pycri started (NRI does not
        restart it)."""
        self._mux.close()
        if self.process is not None and self._reaper is None:
            self._reaper = asyncio.ensure_future(_reap(self.process))

    async def wait_closed(self) -> None:
        await self._mux.wait_closed()
        await self._client.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._serving
        if self._reaper is not None:
            await self._reaper

    # The runtime service ----------------------------------------------------------------
    async def _register(self, request: nri.RegisterPluginRequest) -> nri.Empty:
        if self._registered.done():
            raise TtrpcError(grpc.StatusCode.FAILED_PRECONDITION, "already registered")
        if self.process is None:
            try:
                names.check_name(request.plugin_name)
                names.check_index(request.plugin_idx)
            except ValueError as exc:
                self._registered.set_exception(PluginError(f"NRI plugin registration: {exc}"))
                raise TtrpcError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            self.idx, self.name = request.plugin_idx, request.plugin_name
        log.info("%r registered (NRI %s)", self, request.NRI_version or "unknown")
        self._registered.set_result(None)
        return nri.Empty()

    async def _update_containers(self, request: nri.UpdateContainersRequest
                                 ) -> nri.UpdateContainersResponse:
        if self._on_update is None or not self.events:
            raise TtrpcError(grpc.StatusCode.FAILED_PRECONDITION, "plugin is not configured")
        failed = await self._on_update(self, list(request.update), list(request.evict))
        return nri.UpdateContainersResponse(failed=failed)


def _batches(pods: list[nri.PodSandbox], containers: list[nri.Container]
             ) -> list[tuple[list[nri.PodSandbox], list[nri.Container]]]:
    """Pods and containers packed into messages under SYNC_BUDGET each, in order (pods first,
    so a plugin has met a container's pod by the time the container arrives); at least one."""
    batches: list[tuple[list[nri.PodSandbox], list[nri.Container]]] = [([], [])]
    size = 0
    for items, slot in ((pods, 0), (containers, 1)):
        for item in items:
            n = item.ByteSize() + 8  # the field's tag and length
            if size + n > SYNC_BUDGET and size:
                batches.append(([], []))
                size = 0
            batches[-1][slot].append(item)  # type: ignore[arg-type]
            size += n
    return batches


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()
