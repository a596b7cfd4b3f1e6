"""The registry client against a real docker-registry (plain HTTP on loopback), and its auth
state machine against scripted answers."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from cri.image import manifest as m
from cri.image.auth import Credentials
from cri.image.registries_conf import Endpoint
from cri.image.registry import (
    RegistryAuthError,
    RegistryClient,
    RegistryNotFound,
    RegistryUnavailable,
)
from tests.fixtures.http_proxy import clear_proxy_env
from tests.fixtures.registry import LocalRegistry, free_port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    try:
        reg.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        yield reg
    finally:
        reg.stop()


def _image(reg: LocalRegistry, repo: str) -> tuple[str, bytes]:
    layer = b"layer bytes " * 1000
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    man = {"schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
           "config": {"mediaType": m.OCI_CONFIG, "digest": reg.push_blob(repo, config),
                      "size": len(config)},
           "layers": [{"mediaType": m.OCI_LAYER_GZIP, "digest": reg.push_blob(repo, layer),
                       "size": len(layer)}]}
    return reg.push_manifest(repo, "v1", man), layer


def test_manifest_and_blob_from_a_real_registry(registry: LocalRegistry) -> None:
    digest, layer = _image(registry, "team/app")
    ep = Endpoint(f"{registry.host}/team/app", insecure=True, mirror=False)

    async def scenario() -> None:
        client = RegistryClient()
        try:
            got = await client.manifest(ep, "v1")
            assert got.digest == digest and got.media_type == m.OCI_MANIFEST
            man = m.parse_manifest(got.body, got.media_type)
            assert isinstance(man, m.Manifest)
            v = m.DigestVerifier(man.layers[0].digest, man.layers[0].size)
            data = b""
            async for chunk in client.blob(ep, man.layers[0].digest):
                v.update(chunk)
                data += chunk
            v.finish()
            assert data == layer
            assert (await client.manifest(ep, digest)).body == got.body  # by digest too
            with pytest.raises(RegistryNotFound, match="team/app"):
                await client.manifest(ep, "no-such-tag")
            with pytest.raises(RegistryNotFound):
                await client.manifest(Endpoint(f"{registry.host}/nope", True, False), "v1")
            with pytest.raises(RegistryUnavailable):  # not insecure: HTTPS only, and it is HTTP
                await client.manifest(Endpoint(f"{registry.host}/team/app", False, False), "v1")
            dead = Endpoint(f"127.0.0.1:{free_port()}/x", insecure=True, mirror=False)
            with pytest.raises(RegistryUnavailable, match="unreachable"):
                await client.manifest(dead, "v1")
        finally:
            await client.close()

    asyncio.run(scenario())


def _scripted(token_calls: list[httpx.Request], *, scheme: str = "bearer",
              good: str = "alice:pw") -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.test":
            token_calls.append(req)
            sent = req.headers.get("authorization", "")
            if sent and sent != "Basic " + base64.b64encode(good.encode()).decode():
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "T0K", "expires_in": 300})
        want = "Bearer T0K" if scheme == "bearer" else \
            "Basic " + base64.b64encode(good.encode()).decode()
        if req.headers.get("authorization") == want:
            return httpx.Response(200, content=b"{}", headers={"content-type": m.OCI_MANIFEST})
        challenge = ('Bearer realm="https://auth.test/token",service="reg.test"'
                     if scheme == "bearer" else 'Basic realm="reg"')
        return httpx.Response(401, headers={"www-authenticate": challenge})
    return httpx.MockTransport(handler)


def test_bearer_tokens_are_fetched_once_and_cached() -> None:
    calls: list[httpx.Request] = []
    ep = Endpoint("reg.test/library/busybox", insecure=False, mirror=False)

    async def scenario() -> None:
        client = RegistryClient(transport=_scripted(calls))
        try:
            await client.manifest(ep, "latest", Credentials("alice", "pw"))
            await client.manifest(ep, "latest", Credentials("alice", "pw"))
        finally:
            await client.close()

    asyncio.run(scenario())
    assert len(calls) == 1
    assert calls[0].url.params["scope"] == "repository:library/busybox:pull"
    assert calls[0].url.params["service"] == "reg.test"


def test_refused_credentials_and_basic_auth() -> None:
    ep = Endpoint("reg.test/x", insecure=False, mirror=False)

    async def scenario() -> None:
        client = RegistryClient(transport=_scripted([]))
        basic = RegistryClient(transport=_scripted([], scheme="basic"))
        try:
            with pytest.raises(RegistryAuthError, match="refused"):
                await client.manifest(ep, "v1", Credentials("mallory", "nope"))
            auth = base64.b64encode(b"alice:pw").decode()
            assert (await basic.manifest(ep, "v1", Credentials(auth=auth))).body == b"{}"
            with pytest.raises(RegistryAuthError):
                await basic.manifest(ep, "v1", Credentials())  # anonymous is not enough
        finally:
            await client.close()
            await basic.close()

    asyncio.run(scenario())


ALICE = "Basic " + base64.b64encode(b"alice:pw").decode()


def _plain_http_realm(token_calls: list[httpx.Request], *, anonymous: str) -> httpx.MockTransport:
    """A registry (any scheme) whose token realm is http://auth.test/token. The token server
    gives Alice a full token; an anonymous caller gets 401 (``anonymous="refused"``), a token
    the registry refuses (``"useless"``), or one it accepts (``"enough"``: a public image)."""
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.test":
            token_calls.append(req)
            if req.headers.get("authorization") == ALICE or b"refresh_token" in req.content:
                return httpx.Response(200, json={"token": "FULL"})
            if anonymous == "refused":
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "ANON"})
        sent = req.headers.get("authorization")
        if sent == "Bearer FULL" or (sent == "Bearer ANON" and anonymous == "enough"):
            return httpx.Response(200, content=b"{}", headers={"content-type": m.OCI_MANIFEST})
        return httpx.Response(401, headers={
            "www-authenticate": 'Bearer realm="http://auth.test/token",service="reg.test"'})
    return httpx.MockTransport(handler)


def _leaked(calls: list[httpx.Request]) -> list[httpx.Request]:
    return [c for c in calls if "authorization" in c.headers or b"refresh_token" in c.content]


@pytest.mark.parametrize("anonymous", ["refused", "useless"])
def test_credentials_are_not_sent_to_a_plain_http_realm(anonymous: str) -> None:
    calls: list[httpx.Request] = []
    ep = Endpoint("reg.test/private/app", insecure=False, mirror=False)

    async def scenario() -> None:
        client = RegistryClient(transport=_plain_http_realm(calls, anonymous=anonymous))
        try:
            for creds in (Credentials("alice", "pw"), Credentials(identity_token="rt")):
                with pytest.raises(RegistryAuthError, match=re.escape(
                        "refusing to send credentials to http://auth.test/token over plain HTTP")):
                    await client.manifest(ep, "v1", creds)
        finally:
            await client.close()

    asyncio.run(scenario())
    assert calls and _leaked(calls) == []


def test_a_plain_http_realm_still_serves_public_images_anonymously() -> None:
    calls: list[httpx.Request] = []
    ep = Endpoint("reg.test/library/busybox", insecure=False, mirror=False)

    async def scenario() -> None:
        client = RegistryClient(transport=_plain_http_realm(calls, anonymous="enough"))
        try:
            assert (await client.manifest(ep, "v1", Credentials("alice", "pw"))).body == b"{}"
        finally:
            await client.close()

    asyncio.run(scenario())
    assert len(calls) == 1 and _leaked(calls) == []


def test_an_insecure_registry_may_send_credentials_to_a_plain_http_realm() -> None:
    calls: list[httpx.Request] = []
    ep = Endpoint("reg.test/private/app", insecure=True, mirror=False)

    async def scenario() -> None:
        client = RegistryClient(transport=_plain_http_realm(calls, anonymous="refused"))
        try:
            assert (await client.manifest(ep, "v1", Credentials("alice", "pw"))).body == b"{}"
        finally:
            await client.close()

    asyncio.run(scenario())
    assert [c.headers.get("authorization") for c in calls] == [ALICE]


def test_blob_exists(registry: LocalRegistry) -> None:
    repo = "team/exists"
    present = registry.push_blob(repo, b"some blob")
    ep = Endpoint(f"{registry.host}/{repo}", insecure=True, mirror=False)

    async def scenario() -> None:
        client = RegistryClient()
        try:
            assert await client.blob_exists(ep, present) is True
            assert await client.blob_exists(ep, "sha256:" + "0" * 64) is False
        finally:
            await client.close()

    asyncio.run(scenario())


def test_blob_requests_for_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)
    ep = Endpoint("registry.example:5000/team/app", insecure=False, mirror=False)
    req = RegistryClient(timeout=7).blob_request(ep, "sha256:" + "a" * 64)
    assert req is not None
    assert req.url == f"https://registry.example:5000/v2/team/app/blobs/sha256:{'a' * 64}"
    assert req.verify and req.timeout == 7 and "Authorization" not in req.headers
    # A plain http:// proxy from the environment is one the worker thread speaks to
    # (blob_http); an https:// or socks one, or a transport of the caller's own, is left to
    # the client itself.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert RegistryClient().blob_request(ep, "sha256:" + "a" * 64) is not None
    for other in ("https://proxy.example:3128", "socks5://proxy.example:1080"):
        monkeypatch.setenv("ALL_PROXY", other)
        assert RegistryClient().blob_request(ep, "sha256:" + "a" * 64) is None
    monkeypatch.delenv("ALL_PROXY")
    monkeypatch.delenv("HTTPS_PROXY")
    own = RegistryClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    assert own.blob_request(ep, "sha256:" + "a" * 64) is None
