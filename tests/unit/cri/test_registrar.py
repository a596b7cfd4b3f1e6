from __future__ import annotations

import pytest

from cri.errors import AlreadyExists, InvalidArgument, NotFound
from cri.store.registrar import IdIndex, NameRegistrar


def test_names_are_reserved_once_and_released() -> None:
    r = NameRegistrar()
    r.reserve("k8s_POD_a_ns_uid_0", "id1")
    r.reserve("k8s_POD_a_ns_uid_0", "id1")  # the owner may reserve again
    with pytest.raises(AlreadyExists, match="id1"):
        r.reserve("k8s_POD_a_ns_uid_0", "id2")
    r.release("k8s_POD_a_ns_uid_0")
    r.reserve("k8s_POD_a_ns_uid_0", "id2")
    assert r.owner("k8s_POD_a_ns_uid_0") == "id2"


def test_unique_prefixes_resolve() -> None:
    idx = IdIndex()
    for i in ("abc123", "abd456", "ff00"):
        idx.add(i)
    assert idx.resolve("abc") == "abc123"
    assert idx.resolve("ff00") == "ff00"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        idx.resolve("ab")
    with pytest.raises(NotFound):
        idx.resolve("zz")
    with pytest.raises(InvalidArgument):
        idx.resolve("")
    idx.remove("abc123")
    assert idx.resolve("ab") == "abd456"
