"""The /metrics endpoint on a real socket: formats, keep-alive, refusals, TLS, and close()
leaving no connection behind."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from cri.metrics.endpoint import MetricsEndpoint
from cri.streaming.server import tls_context
from tests.selfsigned import HAVE_OPENSSL, make_cert


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("pycri_test_things", "Things.", registry=reg).inc(3)
    return reg


async def _plain() -> None:
    endpoint = MetricsEndpoint(registry(), "127.0.0.1", 0)
    await endpoint.start()
    try:
        assert endpoint.url.startswith("http://127.0.0.1:")
        base = endpoint.url.removesuffix("/metrics")
        async with httpx.AsyncClient(base_url=base) as client:
            reply = await client.get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "pycri_test_things_total 3.0" in reply.text.splitlines()
            # Same connection again (Prometheus keeps it alive between scrapes).
            again = await client.get("/metrics?x=1", headers={"Accept-Encoding": "identity"})
            assert again.text == reply.text and "content-encoding" not in again.headers
            open_metrics = await client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert open_metrics.text.rstrip().endswith("# EOF")
            head = await client.head("/metrics")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) > 0
            assert (await client.get("/")).status_code == 404
            refused = await client.post("/metrics", content=b"x")
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
        # gzip on the wire when accepted: read it raw.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                     b"Connection: close\r\n\r\n")
        raw = await reader.read()
        writer.close()
        head_bytes, _, body = raw.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head_bytes.lower()
        assert b"pycri_test_things_total 3.0" in gzip.decompress(body)
        # Garbage is a 400, not a crash; the endpoint keeps serving.
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
        writer.write(b"\x00\x01 not http\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
        # A connection kept alive, idle, does not hold close() up; then nothing answers.
        async with httpx.AsyncClient() as client:
            assert (await client.get(endpoint.url)).status_code == 200
            await endpoint.close()
            with pytest.raises(httpx.TransportError):
                await client.get(endpoint.url)
    finally:
        await endpoint.close()


def test_serves_the_registry_over_http() -> None:
    asyncio.run(_plain())


def test_a_taken_port_fails_start() -> None:
    async def main() -> None:
        first = MetricsEndpoint(registry(), "127.0.0.1", 0)
        await first.start()
        try:
            port = int(first.url.rsplit(":", 1)[1].removesuffix("/metrics"))
            with pytest.raises(OSError):
                await MetricsEndpoint(registry(), "127.0.0.1", port).start()
        finally:
            await first.close()
    asyncio.run(main())


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl binary")
def test_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    server_ctx = tls_context(str(cert), str(key))
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        endpoint = MetricsEndpoint(registry(), "127.0.0.1", 0, server_ctx)
        await endpoint.start()
        try:
            assert endpoint.url.startswith("https://127.0.0.1:")
            async with httpx.AsyncClient(verify=client_ctx) as client:
                reply = await client.get(endpoint.url)
                assert "pycri_test_things_total 3.0" in reply.text
            async with httpx.AsyncClient() as client:  # plain http to a TLS port gets nothing
                with pytest.raises(httpx.HTTPError):
                    await client.get(endpoint.url.replace("https://", "http://"))
        finally:
            await endpoint.close()
    asyncio.run(main())
