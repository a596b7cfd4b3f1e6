"""The daemon: a grpc.aio server on a unix socket with the CRI Runtime and Image services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import grpc

from cri import sdnotify
from cri.api import api_pb2_grpc
from cri.config import Config, ConfigError, prepare, socket_gid
from cri.image.servicer import ImageServicer
from cri.interceptor import CRIInterceptor, RequestIdFilter
from cri.metrics.endpoint import MetricsEndpoint
from cri.metrics.interceptor import MetricsInterceptor
from cri.runtime.daemon import Runtime
from cri.runtime.nri_host import RuntimeHost
from cri.runtime.servicer import RuntimeServicer
from cri.store import state_format
from cri.store.state_format import NewerState
from cri.streaming.server import tls_context
from cri.unix_socket import SocketInUse, claim_socket

log = logging.getLogger("pycri")

MAX_MESSAGE = 16 * 1024 * 1024  # same as the kubelet's CRI client limit
# Replies may be bigger: ExecSync carries up to 16 MiB of stdout and 16 MiB of stderr (the
# caps of sandbox/oci/exec_sync.py). A client that accepts less gets RESOURCE_EXHAUSTED from
# its own side; the daemon never refuses to send what it promised.
MAX_REPLY = 2 * MAX_MESSAGE + 1024 * 1024


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.INFO)  # its debug level logs every poll


async def start_metrics(config: Config, runtime: Runtime) -> MetricsEndpoint:
    """The /metrics endpoint; what keeps it from serving is a configuration error."""
    cfg = config.metrics
    try:
        ctx = tls_context(cfg.metrics_cert, cfg.metrics_key)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"pycri.metrics.metrics_cert: cannot load {cfg.metrics_cert} and "
                          f"{cfg.metrics_key}: {exc}") from exc
    endpoint = MetricsEndpoint(runtime.metrics.registry, cfg.metrics_host, cfg.metrics_port, ctx)
    try:
        await endpoint.start()
    except OSError as exc:
        raise ConfigError(f"pycri.metrics.metrics_port: cannot listen on "
                          f"{cfg.metrics_host}:{cfg.metrics_port}: {exc}") from exc
    return endpoint


async def serve(config: Config) -> int:
    setup_logging(config.log_level)
    notify_socket = sdnotify.take_socket()  # under systemd's Type=notify: see cri/sdnotify.py
    try:
        prepare(config)
        state_format.claim(Path(config.root))  # before anything reads the state
        claim_socket(config.socket_path, "pick another --listen")
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    except NewerState as exc:
        log.error("refusing to start: %s", exc)
        return 2
    except SocketInUse as exc:
        log.error("%s", exc)
        return 1
    runtime = Runtime(config)
    interceptor = CRIInterceptor()
    # Outermost, so it counts the code each client saw (see cri/metrics/interceptor.py).
    interceptors: list[grpc.aio.ServerInterceptor] = [interceptor]
    if config.metrics.enable_metrics:
        interceptors.insert(0, MetricsInterceptor(runtime.metrics))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_REPLY)],
    )
    # The RPCs later work implements are filled in at import (fill_unimplemented), which the
    # type checker cannot see, hence the abstract-class ignore.
    runtime_servicer = RuntimeServicer(runtime)  # type: ignore[abstract]
    image_servicer = ImageServicer(runtime)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime_servicer, server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(image_servicer, server)
    sock = config.socket_path
    old_umask = os.umask(0o177)  # the socket is born 0600, then widened to socket_mode
    try:
        server.add_insecure_port(f"unix://{sock}")
    finally:
        os.umask(old_umask)
    gid = socket_gid(config.api)
    if gid is not None:
        os.chown(sock, -1, gid)
    os.chmod(sock, int(config.api.socket_mode, 8))
    await server.start()
    log.info("pycri listening on unix://%s", sock)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics: MetricsEndpoint | None = None
    try:
        if config.metrics.enable_metrics:
            metrics = await start_metrics(config, runtime)
        await runtime.start()
        # Plugins join once the state is recovered, and before the first CRI call is served.
        await runtime.nri.start(RuntimeHost(runtime))
        interceptor.ready = True
        log.info("recovery done: %d pod sandboxes", len(runtime.sandboxes))
        # Ready the moment every RPC answers: the socket serves and recovery is done.
        sdnotify.notify(f"READY=1\nSTATUS=serving on unix://{sock}", notify_socket)
        await stop.wait()
        sdnotify.notify("STOPPING=1\nSTATUS=shutting down", notify_socket)
        log.info("shutting down: finishing in-flight calls (up to %.0fs); pods keep running",
                 config.api.shutdown_grace)
    finally:
        runtime.events.close()  # event streams never finish: the grace is for real work
        if metrics is not None:
            await metrics.close()
        await server.stop(config.api.shutdown_grace)
        await runtime.close()
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
    return 0
