"""The /metrics endpoint: a small HTTP/1.1 server on the daemon's own event loop.

Not prometheus_client's start_http_server, which serves from threads: a scrape there would
read the pod and container stores from another thread while the event loop changes them, and
its thread is one more thing to stop at shutdown. Here a scrape is one short synchronous
collect between two loop steps (a few milliseconds), so the stores cannot change under it; h11
parses the requests, as for the streaming server, and asyncio's TLS serves https.

GET (or HEAD) /metrics answers the text format, or OpenMetrics when the scraper asks for it,
gzipped when it accepts that; keep-alive works as Prometheus uses it. Anything else is 404/405.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl

import h11
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
MAX_REQUEST_HEAD = 16 * 1024  # a scrape is a path and a handful of headers
MAX_REQUEST_BODY = 64 * 1024  # scrapes have none; a client sending more is dropped
REQUEST_TIMEOUT = 30.0  # seconds from connect, or the last answer, to a whole request
CLOSE_GRACE = 5.0  # seconds a closing connection gets to flush


class MetricsEndpoint:
    def __init__(self, registry: Collector, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._registry = registry
        self._host, self._port = host, port
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._url = ""

    async def start(self) -> None:
        """Listen; OSError (the port is taken, the address is not this host's) propagates."""
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, ssl=self._ssl,
            ssl_handshake_timeout=REQUEST_TIMEOUT if self._ssl else None, limit=READ_SIZE)
        # With port 0 the kernel chose: the log says where to scrape.
        host, port = self._server.sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self._url = f"{'https' if self._ssl else 'http'}://{host}:{port}/metrics"
        log.info("metrics endpoint listening on %s", self._url)

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("metrics endpoint not started")
        return self._url

    async def close(self) -> None:
        """Stop listening and drop every connection (a scrape in flight is the scraper's to
        retry)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The endpoint owns each connection's task, so close() can cancel it.
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            while True:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await _read_request(conn, reader)
                if request is None:
                    return
                writer.write(self._respond(conn, request))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # Connection: close, from either side
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(h11.LocalProtocolError, OSError):
                writer.write(_simple(conn, exc.error_status_hint, "bad request"))
                await writer.drain()
        except (TimeoutError, OSError) as exc:  # OSError includes ssl.SSLError
            log.debug("metrics client: %s", exc or type(exc).__name__)
        finally:
            await _close(writer)

    def _respond(self, conn: h11.Connection, request: h11.Request) -> bytes:
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("ascii", "replace").partition("?")[0]
        if path != "/metrics":
            return _simple(conn, 404, "not found: metrics are at /metrics")
        if method not in ("GET", "HEAD"):
            return _simple(conn, 405, "method not allowed", [("Allow", "GET, HEAD")])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        encode, content_type = choose_encoder(headers.get("accept", ""))
        body = encode(self._registry)
        extra = [("Content-Type", content_type)]
        if "gzip" in headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)  # scrapes are frequent: cheap wins
            extra.append(("Content-Encoding", "gzip"))
        return _response(conn, 200, body, extra, head=method == "HEAD")


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close after the last answer has left (TLS: with its close_notify), within a bound."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()  # the endpoint is closing
        raise


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The next request, its body read and dropped; None when the client closed."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))  # b"" tells h11 about EOF
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_REQUEST_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return request
        else:  # ConnectionClosed (or PAUSED, which a server that answered first never sees)
            return None


def _simple(conn: h11.Connection, status: int, message: str,
            headers: list[tuple[str, str]] | None = None) -> bytes:
    return _response(conn, status, (message + "\n").encode(),
                     [("Content-Type", "text/plain; charset=utf-8"), *(headers or [])])


def _response(conn: h11.Connection, status: int, body: bytes, headers: list[tuple[str, str]],
              head: bool = False) -> bytes:
    events: list[h11.Response | h11.Data | h11.EndOfMessage] = [h11.Response(
        status_code=status, headers=[*headers, ("Content-Length", str(len(body))),
                                     ("X-Content-Type-Options", "nosniff")])]
    if not head:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    return b"".join(conn.send(e) or b"" for e in events)
