"""The HTTP proxy the daemon's environment names for a URL, as httpx reads it for the registry
client: ``HTTPS_PROXY`` for https URLs, ``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for both,
``NO_PROXY`` for the hosts to reach directly (upper or lower case, urllib's rules).

A blob fetched in a worker thread (blob_http) goes through a plain ``http://`` proxy: CONNECT
for an https registry, the absolute URL for a plain-http one. Other proxy schemes (an https://
or socks proxy) are left to httpx: ``threads_can_use`` is False then.
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request

SCHEMES = ("http", "https", "all")


def _configured() -> dict[str, str]:
    return {k: v for k, v in urllib.request.getproxies().items() if k in SCHEMES and v}


def _parse(url: str) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(url if "://" in url else f"http://{url}")


def threads_can_use() -> bool:
    """Whether every proxy the environment names is one blob_http speaks to (http://)."""
    return all(_parse(url).scheme == "http" for url in _configured().values())


def proxy_for(url: urllib.parse.SplitResult) -> urllib.parse.SplitResult | None:
    """The proxy to GET ``url`` through, or None to connect directly."""
    proxies = _configured()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return _parse(proxy)


def authorization(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    """The Proxy-Authorization header for credentials in the proxy URL (user:password@)."""
    if proxy.username is None:
        return {}
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}
