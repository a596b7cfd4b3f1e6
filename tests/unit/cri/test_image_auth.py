from __future__ import annotations

import base64
import json

import pytest

from cri.image.auth import (
    AuthError,
    Challenge,
    Credentials,
    Token,
    TokenCache,
    basic_header,
    parse_challenges,
    parse_token_response,
    scope_for,
    token_request,
)

HUB = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
       'scope="repository:library/busybox:pull"')


def test_docker_hub_style_challenge() -> None:
    (c,) = parse_challenges(HUB)
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull"}


def test_several_challenges_commas_in_quotes_escapes_and_case() -> None:
    header = ('Basic realm="a, b", charset=UTF-8, BEARER Realm="https://t/x",'
              'scope="repository:a:pull,push" , Newauth realm="q\\"uote"')
    got = parse_challenges(header)
    assert [c.scheme for c in got] == ["basic", "bearer", "newauth"]
    assert got[0].params == {"realm": "a, b", "charset": "UTF-8"}
    assert got[1].params == {"realm": "https://t/x", "scope": "repository:a:pull,push"}
    assert got[2].params == {"realm": 'q"uote'}
    assert parse_challenges("Negotiate abc123==") == [Challenge("negotiate", {"": "abc123=="})]
    assert parse_challenges("") == []
    with pytest.raises(AuthError):
        parse_challenges('Basic realm="open')


def test_credentials() -> None:
    auth = base64.b64encode(b"alice:s3cr:et").decode()
    c = Credentials(auth=auth).resolved()
    assert (c.username, c.password) == ("alice", "s3cr:et")
    assert basic_header(Credentials(auth=auth)) == "Basic " + auth
    assert basic_header(Credentials()) is None
    with pytest.raises(AuthError):
        Credentials(auth="not base64!").resolved()
    with pytest.raises(AuthError):
        Credentials(auth=base64.b64encode(b"nocolon").decode()).resolved()


def test_token_requests() -> None:
    (c,) = parse_challenges(HUB)
    anon = token_request(c, scope_for("library/busybox"), Credentials())
    assert (anon.method, anon.url, anon.headers) == ("GET", "https://auth.docker.io/token", {})
    assert anon.params == {"service": "registry.docker.io",
                           "scope": "repository:library/busybox:pull"}
    basic = token_request(c, scope_for("x/y"), Credentials("u", "p"))
    assert basic.headers["Authorization"].startswith("Basic ")
    assert basic.params["scope"] == "repository:library/busybox:pull repository:x/y:pull"
    refresh = token_request(c, scope_for("x/y"), Credentials(identity_token="rt"))
    assert refresh.method == "POST" and refresh.form is not None
    assert refresh.form["grant_type"] == "refresh_token" and refresh.form["refresh_token"] == "rt"
    with pytest.raises(AuthError, match="realm"):
        token_request(Challenge("bearer", {"realm": "file:///etc/passwd"}), "s", Credentials())


def test_token_responses_and_cache() -> None:
    t = parse_token_response(json.dumps({"token": "abc", "expires_in": 300}).encode(), now=1000)
    assert t == Token("abc", 1300.0)
    t2 = parse_token_response(b'{"access_token": "xyz"}', now=0)
    assert t2.value == "xyz" and t2.expires_at == 60.0
    for bad in (b"nope", b"[]", b'{"expires_in": 5}'):
        with pytest.raises(AuthError):
            parse_token_response(bad, now=0)
    (c,) = parse_challenges(HUB)
    cache = TokenCache()
    key = cache.key(c, "repository:a:pull", Credentials("alice", "pw"))
    assert key[3] == "alice"  # the identity, never the password
    cache.put(key, Token("tok", 100.0))
    assert cache.get(key, now=50) == "tok"
    assert cache.get(key, now=96) is None  # within the renewal margin
    other = cache.key(c, "repository:a:pull", Credentials("bob", "pw"))
    assert other != key
