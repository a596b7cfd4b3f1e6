"""The streaming service: the server the Exec and Attach RPCs hand URLs out for, and what runs
behind those URLs (sandbox/oci/exec_stream.py and sandbox/oci/attach.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cri.config import Config
from cri.streaming import portforward, remotecommand
from cri.streaming.channels import (
    SPDY_REMOTECOMMAND_PROTOCOLS,
    WEBSOCKET_REMOTECOMMAND_PROTOCOLS,
    ExecOptions,
    negotiate,
)
from cri.streaming.portforward_proto import (
    SPDY_PORT_FORWARD_PROTOCOLS,
    TUNNELED_PORT_FORWARD_V1,
    WEBSOCKET_PORT_FORWARD_PROTOCOLS,
)
from cri.streaming.server import Session, StreamHandler, StreamServer, tls_context
from cri.streaming.tokens import TokenStore
from cri.streaming.wstunnel import TunnelStream
from sandbox.oci.attach import Attach
from sandbox.oci.exec_stream import ExecStream

if TYPE_CHECKING:
    from cri.runtime.daemon import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamRequest:
    """What an Exec or Attach RPC asked for; the token stands for it."""

    container_id: str
    command: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool

    @property
    def options(self) -> ExecOptions:
        return ExecOptions(stdin=self.stdin, stdout=self.stdout, stderr=self.stderr and not self.tty,
                           tty=self.tty, command=self.command)


@dataclass(frozen=True)
class PortForwardRequest:
    pod_id: str
    # The ports of the CRI request. The kubelet's proxy dials the URL it got with the client's
    # upgrade headers but without its query, so a WebSocket port-forward through it carries
    # the ports only here (the upstream streaming server takes them from here too).
    ports: tuple[int, ...] = ()


class _Exec:
    def __init__(self, ex: ExecStream) -> None:
        self._ex = ex
        self.stdout = ex.stdout
        self.stderr = ex.stderr

    async def write_stdin(self, data: bytes) -> None:
        await self._ex.write_stdin(data)

    def close_stdin(self) -> None:
        self._ex.close_stdin()

    def resize(self, width: int, height: int) -> None:
        self._ex.resize(width, height)

    async def finish(self) -> int | None:
        return await self._ex.wait()

    async def abort(self) -> None:
        await self._ex.kill()


class _Attach:
    def __init__(self, at: Attach, tty: bool) -> None:
        self._at = at
        self.stdout = at.stdout
        self.stderr: asyncio.StreamReader | None = None if tty else at.stderr

    async def write_stdin(self, data: bytes) -> None:
        await self._at.write_stdin(data)

    def close_stdin(self) -> None:
        self._at.close_stdin()

    def resize(self, width: int, height: int) -> None:
        self._at.resize(width, height)

    async def finish(self) -> int | None:
        """An attach ends when the container's output does (it exited)."""
        await self._at.wait()  # the pumps drain the output; this only waits for its end
        await self._at.close()
        return None

    async def abort(self) -> None:
        await self._at.close()  # detach: the container keeps running


class Streaming:
    def __init__(self, rt: Runtime, config: Config) -> None:
        self.rt = rt
        api = config.api
        self.server = StreamServer(
            api.stream_address, api.stream_port, TokenStore(api.stream_token_ttl),
            {
                "exec": self._handler(self._serve_exec),
                "attach": self._handler(self._serve_attach),
                "portforward": StreamHandler(serve=self._serve_portforward,
                                             spdy_protocols=SPDY_PORT_FORWARD_PROTOCOLS,
                                             websocket_protocols=WEBSOCKET_PORT_FORWARD_PROTOCOLS,
                                             negotiate=negotiate),
            },
            ssl_context=tls_context(api.stream_tls_cert, api.stream_tls_key),
            idle_timeout=api.stream_idle_timeout,
        )

    def _handler(self, serve: Callable[[Session], Awaitable[None]]) -> StreamHandler:
        return StreamHandler(serve=serve, spdy_protocols=SPDY_REMOTECOMMAND_PROTOCOLS,
                             websocket_protocols=WEBSOCKET_REMOTECOMMAND_PROTOCOLS,
                             negotiate=negotiate)

    async def start(self) -> None:
        await self.server.start()
        log.info("streaming server on %s", self.server.base_url)

    async def close(self) -> None:
        await self.server.close()

    def issue(self, kind: str, request: StreamRequest | PortForwardRequest) -> str:
        return self.server.issue(kind, request)

    async def _serve(self, session: Session, start: remotecommand.Starter) -> None:
        req = session.request
        assert isinstance(req, StreamRequest)
        if session.transport == "spdy":
            await remotecommand.serve_spdy(session, req.options, start)
        else:
            await remotecommand.serve_websocket(session, req.options, start)

    async def _serve_exec(self, session: Session) -> None:
        req = session.request
        assert isinstance(req, StreamRequest)
        rt = self.rt

        async def start() -> remotecommand.Process:
            ctr = rt.containers.get(req.container_id)
            if ctr is None or not ctr.running:
                raise RuntimeError(f"container {req.container_id} is not running")
            spec = json.loads(await asyncio.to_thread((ctr.bundle / "config.json").read_bytes))
            oci = rt.oci(ctr.meta.handler)
            ex = await ExecStream.start(oci.runtime_path, oci.runtime_root, ctr.id,
                                        list(req.command), container_process=spec["process"],
                                        tty=req.tty, scratch_dir=rt.exec_dir)
            return _Exec(ex)

        await self._serve(session, start)

    async def _serve_attach(self, session: Session) -> None:
        req = session.request
        assert isinstance(req, StreamRequest)
        rt = self.rt

        async def start() -> remotecommand.Process:
            ctr = rt.containers.get(req.container_id)
            if ctr is None or not ctr.running:
                raise RuntimeError(f"container {req.container_id} is not running")
            return _Attach(await Attach.open(ctr.bundle), req.tty)

        await self._serve(session, start)

    async def _serve_portforward(self, session: Session) -> None:
        req = session.request
        assert isinstance(req, PortForwardRequest)
        rt = self.rt

        def netns() -> Path | None:
            pod = rt.sandboxes.get(req.pod_id)
            if pod is None or not pod.ready:
                raise OSError(f"pod sandbox {req.pod_id} is not ready")
            return Path(pod.meta.netns_path) if pod.meta.netns_path else None

        if session.transport == "spdy":
            await portforward.serve_spdy(session, req.pod_id, netns)
        elif session.protocol == TUNNELED_PORT_FORWARD_V1:  # kubectl's: SPDY inside WebSocket
            await portforward.serve_spdy(TunnelStream(session), req.pod_id, netns)
        else:
            await portforward.serve_websocket_channels(session, req.pod_id, netns, req.ports)
