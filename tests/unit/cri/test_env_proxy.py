"""env_proxy: which proxy a URL goes through, read from the environment as httpx reads it."""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from cri.image.env_proxy import authorization, proxy_for, threads_can_use
from tests.fixtures.http_proxy import clear_proxy_env


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return clear_proxy_env(monkeypatch)


def _for(url: str) -> str | None:
    proxy = proxy_for(urllib.parse.urlsplit(url))
    return None if proxy is None else proxy.geturl()


def test_the_proxy_of_each_scheme_all_as_a_fallback_and_no_proxy(env: pytest.MonkeyPatch
                                                                  ) -> None:
    assert _for("https://r.example/v2/") is None and threads_can_use()
    env.setenv("HTTPS_PROXY", "proxy.example:3128")  # no scheme: http://, as httpx takes it
    env.setenv("ALL_PROXY", "http://all.example:8080")
    assert _for("https://r.example/v2/") == "http://proxy.example:3128"
    assert _for("http://r.example/v2/") == "http://all.example:8080"
    env.setenv("NO_PROXY", ".internal,10.0.0.1")
    assert _for("https://mirror.internal:5000/v2/") is None
    assert _for("http://10.0.0.1:5000/v2/") is None
    assert _for("https://r.example/v2/") == "http://proxy.example:3128"
    assert threads_can_use()
    env.setenv("ALL_PROXY", "https://all.example:8443")
    assert not threads_can_use()


def test_credentials_in_the_proxy_url() -> None:
    assert authorization(urllib.parse.urlsplit("http://proxy.example:3128")) == {}
    header = authorization(urllib.parse.urlsplit("http://me%40corp:p%3Ass@proxy.example:3128"))
    assert base64.b64decode(header["Proxy-Authorization"].removeprefix("Basic ")) == (
        b"me@corp:p:ss")
