from __future__ import annotations

import pytest

from cri.image.reference import (
    InvalidReference,
    Reference,
    image_id,
    is_image_id,
    is_qualified,
    looks_like_id_prefix,
    parse,
    parse_normalized,
)

D = "sha256:" + "a" * 64
D512 = "sha512:" + "b" * 128


@pytest.mark.parametrize("given,canonical", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("someone/tool", "docker.io/someone/tool:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/x/y:v1", "localhost:5000/x/y:v1"),
    ("127.0.0.1:5000/registry.k8s.io/pause:3.9", "127.0.0.1:5000/registry.k8s.io/pause:3.9"),
    ("registry.k8s.io/pause", "registry.k8s.io/pause:latest"),
    ("Registry.Example.COM/a", "Registry.Example.COM/a:latest"),  # host names are not case-folded
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),  # by digest: no tag is invented
    (f"gcr.io/a/b:t@{D}", f"gcr.io/a/b:t@{D}"),
    (f"host:5000/a/b@{D512}", f"host:5000/a/b@{D512}"),
    ("a.b-c/d__e/f-g.h:T_1.x-y", "a.b-c/d__e/f-g.h:T_1.x-y"),
    ("a---b/c", "docker.io/a---b/c:latest"),
    ("[::1]:5000/img", "[::1]:5000/img:latest"),
    ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128),
    ("a" * 64 + ":v1", "docker.io/library/" + "a" * 64 + ":v1"),  # hex is only an id on its own
])
def test_normalisation(given: str, canonical: str) -> None:
    assert str(parse_normalized(given)) == canonical


@pytest.mark.parametrize("bad,why", [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("Foo/bar", "lowercase"),  # not a registry: no '.', ':' or localhost
    ("library/BusyBox:1", "lowercase"),
    ("busybox:", "tag"),
    ("busybox:-bad", "tag"),
    ("busybox:.bad", "tag"),
    ("busybox:caf\u00e9", "non-ASCII"),
    ("x:" + "t" * 129, "tag"),
    ("a//b", "lowercase"),
    ("a/", "lowercase"),
    ("/a", "lowercase"),
    ("a__-b", "lowercase"),
    ("a___b", "lowercase"),
    ("-x", "lowercase"),
    ("x-", "lowercase"),
    ("bad name", "whitespace"),
    ("busybox\n", "whitespace"),
    (":tag", "no repository"),
    ("host:port/x", "registry host"),
    ("-host.io/x", "registry host"),
    ("reg.io/" + "a" * 260, "longer than 255"),
    ("a" * 64, "image id"),
    (D, "image id"),
    ("busybox@sha256:abc", "64 lowercase hex"),
    ("busybox@sha256:" + "A" * 64, "64 lowercase hex"),
    ("busybox@sha256:" + "a" * 65, "64 lowercase hex"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("busybox@" + "a" * 64, "algorithm:hex"),
    ("busybox@sha256:", "algorithm:hex"),
    ("busybox@", "algorithm:hex"),
    (f"busybox@{D}@{D}", "64 lowercase hex"),
])
def test_invalid(bad: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse(bad)


def test_parts_name_and_str() -> None:
    r = parse("127.0.0.1:5000/registry.k8s.io/pause:3.9")
    assert r == Reference("127.0.0.1:5000", "registry.k8s.io/pause", "3.9", None)
    assert r.name == "127.0.0.1:5000/registry.k8s.io/pause"
    assert str(r) == "127.0.0.1:5000/registry.k8s.io/pause:3.9"
    bare = parse("busybox")
    assert (bare.domain, bare.path, bare.tag, bare.digest) == ("", "busybox", None, None)
    assert bare.name == "busybox" and str(bare) == "busybox"  # parse applies no defaults
    n = bare.normalize()
    assert (n.domain, n.path, n.tag, n.name) == ("docker.io", "library/busybox", "latest",
                                                  "docker.io/library/busybox")
    assert n.normalize() == n
    both = parse(f"quay.io/a/b:v1@{D}")
    assert (both.tag, both.digest) == ("v1", D) and both.normalize() == both


def test_helpers() -> None:
    assert is_qualified("quay.io/x") and is_qualified("localhost/x") and is_qualified("h:1/x")
    assert not is_qualified("busybox") and not is_qualified("a/b") and not is_qualified("localhost")
    assert is_image_id(D) and is_image_id("a" * 64)
    assert not is_image_id("a" * 63) and not is_image_id("sha512:" + "a" * 64)
    assert not is_image_id("A" * 64) and not is_image_id("busybox")
    assert image_id("a" * 64) == D and image_id(D) == D and image_id("abc") is None
    assert looks_like_id_prefix("abc1") and looks_like_id_prefix("sha256:abc")
    assert not looks_like_id_prefix("ab") and not looks_like_id_prefix("busybox")
    assert not looks_like_id_prefix("a" * 65)
