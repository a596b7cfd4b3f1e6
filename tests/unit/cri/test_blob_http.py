"""blob_http: a blob GET in a worker thread against a small HTTP server on loopback."""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cri.image.blob_http import BlobStatus, open_blob
from cri.image.registry import BlobRequest, RegistryUnavailable
from tests.fixtures.http_proxy import HTTPProxy, clear_proxy_env
from tests.selfsigned import HAVE_OPENSSL, make_cert

BODY = bytes(range(256)) * 8192  # 2 MiB


class _Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str]] = []  # (path, Authorization)
        self.stall = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append((self.path, self.headers.get("Authorization", "")))
                if self.path == "/v2/r/blobs/redirect-other":
                    self._answer(307, {"Location": f"http://localhost:{outer.port}/blob"})
                elif self.path == "/v2/r/blobs/redirect-same":
                    self._answer(302, {"Location": "/blob"})
                elif self.path == "/v2/r/blobs/private":
                    self._answer(401, {"WWW-Authenticate": 'Bearer realm="http://x/token"'})
                elif self.path == "/v2/r/blobs/stall":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY[:1000])
                    self.wfile.flush()
                    outer.stall.wait(10)
                    self.close_connection = True  # cut short
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY)

            def _answer(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def req(self, path: str) -> BlobRequest:
        return BlobRequest(f"{self.scheme}://127.0.0.1:{self.port}{path}",
                           {"Authorization": "Bearer t0k"}, timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.stall.set()
        s.httpd.shutdown()
        s.httpd.server_close()


def _read_all(req: BlobRequest) -> bytes:
    body = open_blob(req)
    try:
        out = bytearray()
        while piece := body.read():
            out += piece
        return bytes(out)
    finally:
        body.close()


def test_the_body_and_redirects_keep_credentials_at_home(server: _Server) -> None:
    assert _read_all(server.req("/v2/r/blobs/plain")) == BODY
    assert _read_all(server.req("/v2/r/blobs/redirect-same")) == BODY
    assert _read_all(server.req("/v2/r/blobs/redirect-other")) == BODY  # localhost: elsewhere
    assert server.seen == [("/v2/r/blobs/plain", "Bearer t0k"),
                           ("/v2/r/blobs/redirect-same", "Bearer t0k"), ("/blob", "Bearer t0k"),
                           ("/v2/r/blobs/redirect-other", "Bearer t0k"), ("/blob", "")]


def test_other_answers_are_blob_status(server: _Server) -> None:
    with pytest.raises(BlobStatus) as err:
        open_blob(server.req("/v2/r/blobs/private"))
    assert err.value.status == 401 and "realm" in err.value.www_authenticate


def test_an_unreachable_registry_is_unavailable() -> None:
    with pytest.raises(RegistryUnavailable):
        open_blob(BlobRequest("http://127.0.0.1:1/v2/r/blobs/x", timeout=2))


def test_abort_ends_a_read_waiting_for_the_network(server: _Server) -> None:
    body = open_blob(server.req("/v2/r/blobs/stall"))
    try:
        assert body.read() == BODY[:1000]
        threading.Timer(0.2, body.abort).start()
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="stopped"):
            while body.read():
                pass
        assert time.monotonic() - t0 < 4  # not the 5 s read timeout
    finally:
        body.close()


def test_a_connection_closed_early_is_a_broken_download_not_the_end(server: _Server) -> None:
    body = open_blob(server.req("/v2/r/blobs/stall"))
    try:
        assert body.read() == BODY[:1000]
        server.stall.set()  # the server ends the response 1000 bytes into 2 MiB
        with pytest.raises(RegistryUnavailable, match=r"closed .* before the end"):
            while body.read():
                pass
    finally:
        body.close()


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl binary")
def test_tls_is_verified_unless_the_registry_is_insecure(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = _Server(ctx)
    try:
        req = server.req("/v2/r/blobs/plain")
        with pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            open_blob(req)  # a certificate nobody vouches for
        assert _read_all(dataclasses.replace(req, verify=False)) == BODY
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return clear_proxy_env(monkeypatch)


def test_a_plain_http_registry_through_the_environments_proxy(
        server: _Server, no_proxy_env: pytest.MonkeyPatch) -> None:
    proxy = HTTPProxy(user="u", password="p w")
    try:
        no_proxy_env.setenv("http_proxy", proxy.url.replace("p w", "p%20w"))
        assert _read_all(server.req("/v2/r/blobs/plain")) == BODY
        # The absolute URL to the proxy, which passed it on with the registry's credentials.
        assert [(s.method, s.target) for s in proxy.seen] == [
            ("GET", f"http://127.0.0.1:{server.port}/v2/r/blobs/plain")]
        assert server.seen == [("/v2/r/blobs/plain", "Bearer t0k")]
        assert proxy.refused == 0
        no_proxy_env.setenv("no_proxy", "127.0.0.1")
        assert _read_all(server.req("/v2/r/blobs/plain")) == BODY
        assert len(proxy.seen) == 1  # straight to the registry
    finally:
        proxy.close()


def test_a_proxy_that_wants_credentials_we_lack_is_unavailable(
        server: _Server, no_proxy_env: pytest.MonkeyPatch) -> None:
    proxy = HTTPProxy(user="u", password="secret")
    try:
        no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(BlobStatus) as err:
            open_blob(server.req("/v2/r/blobs/plain"))
        assert err.value.status == 407 and proxy.refused == 1 and server.seen == []
    finally:
        proxy.close()


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl binary")
def test_an_https_registry_through_a_connect_tunnel(tmp_path: Path,
                                                    no_proxy_env: pytest.MonkeyPatch) -> None:
    cert, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = _Server(ctx)
    proxy = HTTPProxy(user="u", password="p")
    try:
        no_proxy_env.setenv("HTTPS_PROXY", proxy.url)
        req = server.req("/v2/r/blobs/plain")
        # TLS is end to end: the registry's certificate is still checked through the tunnel.
        with pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            open_blob(req)
        assert _read_all(dataclasses.replace(req, verify=False)) == BODY
        assert {(s.method, s.target) for s in proxy.seen} == {
            ("CONNECT", f"127.0.0.1:{server.port}")}
        assert proxy.refused == 0
        assert server.seen == [("/v2/r/blobs/plain", "Bearer t0k")]
    finally:
        proxy.close()
        server.httpd.shutdown()
        server.httpd.server_close()
