"""One blob's body over a blocking HTTP/1.1 connection, read in a worker thread.

The registry client (httpx, async) costs about 1.1 ms of event-loop CPU per MB of body here
(64 KiB reads through anyio, httpcore and h11, each copied on the way): 0.2 s of a 126 MB
pull, all of it holding the GIL. http.client reading the same bytes in large pieces from a
worker thread costs a fifth of that and lets go of the GIL in every recv. So the client
resolves where and how to ask (base URL, Authorization) and the worker thread does the GET,
following redirects as httpx would (the Authorization header is not sent to another origin).
A 401 goes back to the client for a fresh token (BlobUnauthorized). A plain http:// proxy
from the environment is used as httpx would use it (env_proxy).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import urllib.parse

import httpx

from cri.image import env_proxy
from cri.image.registry import BlobRequest, RegistryError, RegistryUnavailable

READ_BYTES = 1 << 18  # the most one read of the body asks for (see OUT_CHUNK)
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class BlobStatus(RegistryError):
    """The registry answered with something other than the blob (the caller maps it)."""

    def __init__(self, status: int, www_authenticate: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.www_authenticate = www_authenticate


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or ""), parts.port


class BlobBody:
    """An open GET whose status was 200. ``read`` gives the next piece (b"" at the end);
    ``abort`` (from any thread) makes a read waiting for the network return at once."""

    def __init__(self, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self._lock = threading.Lock()
        self._aborted = False

    def read(self) -> bytes:
        try:
            data = self._resp.read1(READ_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            if self._aborted:
                raise RegistryUnavailable("download stopped") from exc
            raise RegistryUnavailable(f"reading the blob: {exc!r}") from exc
        if not data:
            if self._aborted:
                raise RegistryUnavailable("download stopped")
            left = self._resp.length  # what Content-Length still promised
            if left:
                # read1 takes a connection closed early for the end: it is a broken download
                # (retried), not a short blob.
                raise RegistryUnavailable(f"the connection closed {left} bytes before the end "
                                          "of the blob")
        return data

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sock = self._conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


def open_blob(req: BlobRequest) -> BlobBody:
    """GET ``req.url`` (redirects followed); BlobStatus for an answer other than 200,
    RegistryUnavailable when the registry cannot be reached or breaks off."""
    url = req.url
    headers = {"Accept-Encoding": "identity", **req.headers}
    first = urllib.parse.urlsplit(url)
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"cannot fetch a blob from {url!r}")
        conn, target, via_proxy = _connection(parts, req)
        try:
            conn.request("GET", target, headers={**headers, **via_proxy})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RegistryUnavailable(f"{parts.netloc}: {exc!r}") from exc
        if resp.status == 200:
            return BlobBody(conn, resp)
        status, location = resp.status, resp.getheader("location", "")
        www = resp.getheader("www-authenticate", "")
        resp.close()
        conn.close()
        if status in _REDIRECTS and location:
            url = urllib.parse.urljoin(url, location)
            if _origin(urllib.parse.urlsplit(url)) != _origin(first):
                headers.pop("Authorization", None)  # as httpx: no credentials elsewhere
            continue
        raise BlobStatus(status, www)
    raise RegistryUnavailable(f"more than {MAX_REDIRECTS} redirects for {req.url}")


@functools.cache
def _ssl_context(verify: bool) -> ssl.SSLContext:
    """The registry client's TLS settings (httpx's, its CA bundle included), made once per
    daemon as httpx makes its client's: loading the bundle costs about 19 ms of CPU here, which
    every layer's connection paid. One context serves every thread's connections."""
    return httpx.create_ssl_context(verify=verify)


def _connection(parts: urllib.parse.SplitResult, req: BlobRequest
                ) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """The connection to GET ``parts`` on, the request target, and headers for the proxy.

    Through a proxy from the environment (env_proxy): an https registry is reached by a CONNECT
    tunnel (the proxy's credentials go with the CONNECT only, TLS is end to end and checked
    against the registry's name); a plain-http one by sending the proxy the absolute URL."""
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = env_proxy.proxy_for(parts)
    if parts.scheme == "https":
        ctx = _ssl_context(req.verify)
        if proxy is None:
            return (http.client.HTTPSConnection(host, parts.port, timeout=req.timeout,
                                                context=ctx), target, {})
        conn = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 80,
                                           timeout=req.timeout, context=ctx)
        conn.set_tunnel(host, parts.port or 443, headers=env_proxy.authorization(proxy))
        return conn, target, {}
    if proxy is None:
        return http.client.HTTPConnection(host, parts.port, timeout=req.timeout), target, {}
    absolute = urllib.parse.urlunsplit(("http", parts.netloc, parts.path or "/", parts.query, ""))
    return (http.client.HTTPConnection(proxy.hostname or "", proxy.port or 80,
                                       timeout=req.timeout),
            absolute, env_proxy.authorization(proxy))
