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
    credentials_in_clear,
    parse_challenges,
    parse_token_response,
    scope_for,
    static_bearer,
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
    # Malformed: never raises; the well-formed challenges before the break are kept.
    assert parse_challenges('Basic realm="open') == []
    assert parse_challenges('Basic realm="ok", Bearer realm="open') == [
        Challenge("basic", {"realm": "ok"})]


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
    assert key[3].startswith("sha256:") and "pw" not in key[3]  # a fingerprint, never a secret
    cache.put(key, Token("tok", 100.0))
    assert cache.get(key, now=50) == "tok"
    assert cache.get(key, now=96) is None  # within the renewal margin
    other = cache.key(c, "repository:a:pull", Credentials("bob", "pw"))
    assert other != key
    # Same user, another password: not the same identity, so no borrowed token.
    assert cache.key(c, "repository:a:pull", Credentials("alice", "wrong")) != key
    # Two refresh tokens are two identities; anonymous is "".
    assert Credentials(identity_token="a").identity != Credentials(identity_token="b").identity
    assert Credentials().identity == ""
    # The base64 auth field and the explicit fields are the same identity.
    assert Credentials(auth=base64.b64encode(b"alice:pw").decode()).identity == key[3]


def test_from_auth_field() -> None:
    c = Credentials.from_auth_field(base64.b64encode(b"bob:p:w").decode())
    assert (c.username, c.password, c.auth) == ("bob", "p:w", "")
    for bad in ("%%%", "Ym9i\u00e9", base64.b64encode(b"\xff\xfe:x").decode()):
        with pytest.raises(ValueError, match="base64"):
            Credentials.from_auth_field(bad)
    with pytest.raises(ValueError, match="user:password"):
        Credentials.from_auth_field(base64.b64encode(b"justauser").decode())


def test_challenge_grammar_edges() -> None:
    # Spaces around '=', token values, empty quoted value, a scheme with no params between two.
    got = parse_challenges('Bearer realm = "https://r/t" , service=reg,Basic, Digest realm=""')
    assert got == [Challenge("bearer", {"realm": "https://r/t", "service": "reg"}),
                   Challenge("basic", {}), Challenge("digest", {"realm": ""})]
    # An escaped backslash and an escaped comma inside quotes.
    (c,) = parse_challenges(r'Bearer realm="a\\b", scope="x\,y"')
    assert c.params == {"realm": "a\\b", "scope": "x,y"}


def test_registry_token_needs_no_request() -> None:
    (c,) = parse_challenges(HUB)
    creds = Credentials(registry_token="rtok")
    assert static_bearer(creds) == "Bearer rtok"
    assert static_bearer(Credentials("u", "p")) is None
    with pytest.raises(AuthError, match="sent as is"):
        token_request(c, "s", creds)


def test_refresh_token_form() -> None:
    (c,) = parse_challenges(HUB)
    tr = token_request(c, scope_for("x/y"), Credentials("u", identity_token="rt"))
    assert (tr.method, tr.url, tr.params, tr.headers) == ("POST", "https://auth.docker.io/token", {}, {})
    assert tr.form == {"grant_type": "refresh_token", "refresh_token": "rt",
                       "service": "registry.docker.io", "client_id": "pycri",
                       "scope": "repository:library/busybox:pull repository:x/y:pull"}
    # The same scope twice is asked for once.
    same = token_request(c, "repository:library/busybox:pull", Credentials())
    assert same.params["scope"] == "repository:library/busybox:pull"


def test_token_response_details() -> None:
    body = json.dumps({"access_token": "a", "token": "t", "expires_in": 120,
                       "issued_at": "2024-01-01T00:00:00Z", "refresh_token": "new"}).encode()
    t = parse_token_response(body, now=10)
    assert (t.value, t.expires_at, t.refresh_token) == ("t", 130.0, "new")
    assert t.issued_at == 1704067200.0  # informational; the expiry counts from now
    odd = parse_token_response(b'{"token": "t", "expires_in": -5, "issued_at": "yesterday"}', now=0)
    assert (odd.expires_at, odd.issued_at) == (60.0, None)
    with pytest.raises(AuthError, match="control"):
        parse_token_response(b'{"token": "a\\r\\nX-Evil: 1"}', now=0)


def test_token_cache_is_bounded() -> None:
    cache = TokenCache(max_entries=2)
    keys = [("r", "s", f"scope{i}", "") for i in range(3)]
    cache.put(keys[0], Token("a", 300.0))
    cache.put(keys[1], Token("b", 100.0))
    cache.put(keys[2], Token("c", 200.0))  # evicts the one that dies first
    assert len(cache) == 2
    assert cache.get(keys[1], now=0) is None
    assert cache.get(keys[0], now=0) == "a" and cache.get(keys[2], now=0) == "c"


def test_credentials_in_clear_only_for_secrets_to_a_plain_http_realm() -> None:
    http = Challenge("bearer", {"realm": "http://auth.example/token"})
    upper = Challenge("bearer", {"realm": "HTTP://auth.example/token"})
    tls = Challenge("bearer", {"realm": "https://auth.example/token"})
    user = Credentials("u", "p")
    assert credentials_in_clear(http, user) and credentials_in_clear(upper, user)
    assert credentials_in_clear(http, Credentials(auth=base64.b64encode(b"u:p").decode()))
    assert credentials_in_clear(http, Credentials(identity_token="rt"))
    assert not credentials_in_clear(tls, user)
    assert not credentials_in_clear(http, Credentials())  # nothing to leak
