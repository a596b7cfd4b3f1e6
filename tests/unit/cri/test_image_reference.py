from __future__ import annotations

import pytest

from cri.image.reference import (
    InvalidReference,
    image_id,
    is_qualified,
    looks_like_id_prefix,
    parse,
    parse_normalized,
)

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("given,canonical", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("someone/tool", "docker.io/someone/tool:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/x/y:v1", "localhost:5000/x/y:v1"),
    ("127.0.0.1:5000/registry.k8s.io/pause:3.9", "127.0.0.1:5000/registry.k8s.io/pause:3.9"),
    ("registry.k8s.io/pause", "registry.k8s.io/pause:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),  # by digest: no tag is invented
    (f"gcr.io/a/b:t@{D}", f"gcr.io/a/b:t@{D}"),
    ("a.b-c/d__e/f-g.h:T_1.x-y", "a.b-c/d__e/f-g.h:T_1.x-y"),
    ("[::1]:5000/img", "[::1]:5000/img:latest"),
])
def test_normalisation(given: str, canonical: str) -> None:
    assert str(parse_normalized(given)) == canonical


@pytest.mark.parametrize("bad", [
    "", "Busybox", "busybox:", "busybox:-bad", "a//b", "a/", "/a", "bad name",
    "busybox@sha256:abc", "busybox@md5:" + "a" * 32, "a" * 64, "x:" + "t" * 129,
    "host:port/x", "-x", "x-", "reg.io/" + "a" * 260,
])
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidReference):
        parse(bad)


def test_parts_and_helpers() -> None:
    r = parse("127.0.0.1:5000/registry.k8s.io/pause:3.9")
    assert (r.domain, r.path, r.tag, r.digest) == ("127.0.0.1:5000", "registry.k8s.io/pause",
                                                   "3.9", None)
    assert r.name == "127.0.0.1:5000/registry.k8s.io/pause"
    assert is_qualified("quay.io/x") and not is_qualified("busybox") and not is_qualified("a/b")
    assert image_id("a" * 64) == D and image_id(D) == D and image_id("abc") is None
    assert looks_like_id_prefix("abc1") and looks_like_id_prefix("sha256:abc")
    assert not looks_like_id_prefix("ab") and not looks_like_id_prefix("busybox")
