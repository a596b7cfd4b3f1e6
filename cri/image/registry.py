"""OCI distribution client: manifests and blobs from one registry endpoint, with auth.

The HTTP layer is httpx (async, HTTP/1.1 keep-alive, TLS); challenges, credentials and tokens
come from the sans-IO ``auth`` module. Transport exceptions are translated here, at the I/O
boundary, into the three failures a caller acts on: not found, auth refused, unavailable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import httpx

from cri.image import auth, env_proxy, pull_meter
from cri.image.manifest import ACCEPT, MAX_MANIFEST_BYTES, ManifestError, digest_of
from cri.image.registries_conf import Endpoint

USER_AGENT = "pycri"


class RegistryError(Exception):
    pass


class RegistryNotFound(RegistryError):
    pass


class RegistryAuthError(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    pass


def _withheld(realm: str, ep: Endpoint) -> str:
    return (f"refusing to send credentials to {realm} over plain HTTP (registry {ep.host} is "
            "not marked insecure in registries.conf)")


@dataclass(frozen=True)
class BlobRequest:
    """A blob GET for a worker thread to send (cri.image.blob_http)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool = True  # TLS certificates checked (not for registries marked insecure)
    timeout: float = 30.0  # for connecting and for each read


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str  # of the body as received (what a pull by tag resolves to)


class RegistryClient:
    """Talks to registries for one daemon; token cache and connection pools are shared."""

    def __init__(self, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.tokens = auth.TokenCache()
        self._timeout = timeout
        self._transport = transport
        self._clients: dict[bool, httpx.AsyncClient] = {}
        # What worked last, per registry host: the base URL (an insecure registry may speak
        # plain HTTP), and the Authorization header per repository and credentials. A blob
        # fetched in a worker thread (blob_http) starts from these.
        self._base_ok: dict[str, str] = {}
        self._auth_ok: dict[tuple[str, str, str], str] = {}

    def _client(self, verify: bool) -> httpx.AsyncClient:
        client = self._clients.get(verify)
        if client is None:
            client = httpx.AsyncClient(
                verify=verify, timeout=self._timeout, transport=self._transport,
                headers={"User-Agent": USER_AGENT}, follow_redirects=True,
            )
            self._clients[verify] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def _bases(self, ep: Endpoint) -> list[str]:
        # An insecure registry may speak plain HTTP or unverified HTTPS (registries.conf(5)):
        # try HTTPS first, as containers/image does.
        return [f"https://{ep.host}", f"http://{ep.host}"] if ep.insecure else [f"https://{ep.host}"]

    async def _send(self, ep: Endpoint, method: str, path: str, creds: auth.Credentials,
                    headers: dict[str, str], stream: bool = False) -> httpx.Response:
        last: Exception | None = None
        for base in self._bases(ep):
            client = self._client(verify=not ep.insecure)
            try:
                resp = await self._authorized(client, ep, method, base + path, creds, headers,
                                              stream)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                last = exc
            else:
                self._base_ok[ep.host] = base
                return resp
        raise RegistryUnavailable(f"registry {ep.host} unreachable: {last}") from last

    async def _authorized(self, client: httpx.AsyncClient, ep: Endpoint, method: str, url: str,
                          creds: auth.Credentials, headers: dict[str, str],
                          stream: bool) -> httpx.Response:
        scope = auth.scope_for(ep.repository)
        req = client.build_request(method, url, headers=headers)
        resp = await client.send(req, stream=stream)
        if resp.status_code != 401:
            return resp
        await resp.aclose()
        challenges = auth.parse_challenges(resp.headers.get("www-authenticate", ""))
        header, withheld = await self._answer(client, ep, challenges, scope, creds)
        if header is None:
            raise RegistryAuthError(f"{ep.host} asks for authentication this client cannot give")
        req = client.build_request(method, url, headers={**headers, "Authorization": header})
        resp = await client.send(req, stream=stream)
        if resp.status_code not in (401, 403):
            self._auth_ok[(ep.host, ep.repository, creds.identity)] = header
        if resp.status_code in (401, 403):
            await resp.aclose()
            if withheld:
                raise RegistryAuthError(f"{_withheld(withheld, ep)}; without them {ep.host} "
                                        f"denied access to {ep.repository}")
            raise RegistryAuthError(f"{ep.host} refused the credentials for {ep.repository}")
        return resp

    async def _answer(self, client: httpx.AsyncClient, ep: Endpoint,
                      challenges: list[auth.Challenge], scope: str, creds: auth.Credentials,
                      ) -> tuple[str | None, str]:
        """The Authorization header answering ``challenges`` (None when this client cannot),
        and the token realm the credentials were withheld from ("" when they were not)."""
        try:
            creds = creds.resolved()
        except auth.AuthError as exc:
            raise RegistryAuthError(str(exc)) from exc
        for ch in challenges:
            if ch.scheme == "bearer":
                if creds.registry_token:
                    return f"Bearer {creds.registry_token}", ""
                withheld = ""
                if not ep.insecure and auth.credentials_in_clear(ch, creds):
                    # Only registries.conf's insecure = true accepts plain HTTP for a registry;
                    # a realm the registry names does not. Ask anonymously instead: a public
                    # image needs no password, and a private one fails saying why.
                    withheld, creds = ch.params["realm"], auth.Credentials()
                key = self.tokens.key(ch, scope, creds)
                token = self.tokens.get(key, time.time())
                if token is None:
                    token = await self._fetch_token(client, ep, ch, scope, creds, key, withheld)
                return f"Bearer {token}", withheld
            if ch.scheme == "basic":
                return auth.basic_header(creds), ""
        return None, ""

    async def _fetch_token(self, client: httpx.AsyncClient, ep: Endpoint, ch: auth.Challenge,
                           scope: str, creds: auth.Credentials, key: auth.CacheKey,
                           withheld: str) -> str:
        try:
            tr = auth.token_request(ch, scope, creds)
        except auth.AuthError as exc:
            raise RegistryAuthError(str(exc)) from exc
        try:
            if tr.method == "POST":
                resp = await client.post(tr.url, data=tr.form, headers=tr.headers)
            else:
                resp = await client.get(tr.url, params=tr.params, headers=tr.headers)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"token server {tr.url} unreachable: {exc}") from exc
        if resp.status_code in (401, 403):
            if withheld:
                raise RegistryAuthError(f"{_withheld(withheld, ep)}; the token server refused "
                                        "an anonymous request")
            raise RegistryAuthError(f"token server {tr.url} refused the credentials")
        if resp.status_code != 200:
            raise RegistryAuthError(f"token server {tr.url} answered {resp.status_code}")
        try:
            token = auth.parse_token_response(resp.content, time.time())
        except auth.AuthError as exc:
            raise RegistryAuthError(str(exc)) from exc
        self.tokens.put(key, token)
        return token.value

    async def manifest(self, ep: Endpoint, reference: str,
                       creds: auth.Credentials | None = None) -> FetchedManifest:
        """The manifest or index for a tag or digest, capped at MAX_MANIFEST_BYTES."""
        path = f"/v2/{ep.repository}/manifests/{reference}"
        resp = await self._send(ep, "GET", path, creds or auth.Credentials(),
                                {"Accept": ACCEPT}, stream=True)
        try:
            self._check_status(resp.status_code, ep, f"manifest {reference}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise ManifestError(f"manifest {reference} is over {MAX_MANIFEST_BYTES} bytes")
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"{ep.host}: {exc}") from exc
        finally:
            await resp.aclose()
        data = bytes(body)
        pull_meter.received(len(data))
        return FetchedManifest(data, resp.headers.get("content-type", ""), digest_of(data))

    async def blob(self, ep: Endpoint, digest: str, creds: auth.Credentials | None = None,
                   ) -> AsyncIterator[bytes]:
        """The blob's bytes as they arrive; the caller verifies them (DigestVerifier)."""
        path = f"/v2/{ep.repository}/blobs/{digest}"
        resp = await self._send(ep, "GET", path, creds or auth.Credentials(), {}, stream=True)
        try:
            self._check_status(resp.status_code, ep, f"blob {digest}")
            async for chunk in resp.aiter_raw():
                pull_meter.received(len(chunk))
                yield chunk
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"{ep.host}: {exc}") from exc
        finally:
            await resp.aclose()

    def blob_request(self, ep: Endpoint, digest: str, creds: auth.Credentials | None = None
                     ) -> BlobRequest | None:
        """How a worker thread can GET the blob itself (cri.image.blob_http): the base URL and
        Authorization header that worked last for this registry. None when the blob must come
        through ``blob`` instead: a transport of the caller's own (tests), or a proxy from the
        environment that is not plain http:// (see env_proxy; httpx speaks to those)."""
        if self._transport is not None or not env_proxy.threads_can_use():
            return None
        creds = creds or auth.Credentials()
        headers = {"User-Agent": USER_AGENT}
        header = self._auth_ok.get((ep.host, ep.repository, creds.identity))
        if header is not None:
            headers["Authorization"] = header
        base = self._base_ok.get(ep.host) or self._bases(ep)[0]
        return BlobRequest(f"{base}/v2/{ep.repository}/blobs/{digest}", headers,
                           verify=not ep.insecure, timeout=self._timeout)

    async def reauthorized(self, ep: Endpoint, req: BlobRequest, www_authenticate: str,
                           creds: auth.Credentials | None = None) -> BlobRequest:
        """``req`` with the Authorization header answering the 401 it got."""
        creds = creds or auth.Credentials()
        challenges = auth.parse_challenges(www_authenticate)
        header, withheld = await self._answer(self._client(verify=not ep.insecure), ep,
                                              challenges, auth.scope_for(ep.repository), creds)
        if header is None or header == req.headers.get("Authorization"):
            if withheld:
                raise RegistryAuthError(f"{_withheld(withheld, ep)}; without them {ep.host} "
                                        f"denied access to {ep.repository}")
            raise RegistryAuthError(f"{ep.host} refused the credentials for {ep.repository}")
        return replace(req, headers={**req.headers, "Authorization": header})

    def status_error(self, status: int, ep: Endpoint, what: str) -> RegistryError:
        """The error for an answer other than 200 (as ``blob`` raises it)."""
        try:
            self._check_status(status, ep, what)
        except RegistryError as exc:
            return exc
        return RegistryError(f"{ep.host} answered {status} for {what}")

    async def blob_exists(self, ep: Endpoint, digest: str,
                          creds: auth.Credentials | None = None) -> bool:
        """Whether the registry holds the blob: HEAD, nothing downloaded. False only for a
        404; other failures raise as ``blob`` does."""
        path = f"/v2/{ep.repository}/blobs/{digest}"
        resp = await self._send(ep, "HEAD", path, creds or auth.Credentials(), {})
        if resp.status_code == 404:
            return False
        self._check_status(resp.status_code, ep, f"blob {digest}")
        return True

    @staticmethod
    def _check_status(status: int, ep: Endpoint, what: str) -> None:
        if status == 200:
            return
        if status == 404:
            raise RegistryNotFound(f"{what} not found in {ep.location}")
        if status in (401, 403):
            raise RegistryAuthError(f"{ep.host} denied access to {ep.repository}")
        if status in (429, 500, 502, 503, 504):
            raise RegistryUnavailable(f"{ep.host} answered {status} for {what}")
        raise RegistryError(f"{ep.host} answered {status} for {what}")
