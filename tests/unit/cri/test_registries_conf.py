from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri.image.registries_conf import (
    BlockedRegistry,
    Endpoint,
    RegistriesConfError,
    RegistriesConfWatcher,
    load,
    parse,
)

CRITEST_CONF = Path(__file__).resolve().parents[4] / "shared" / "critest" / "registries.conf"


def test_the_critest_mirror_config() -> None:
    if not CRITEST_CONF.exists():
        pytest.skip("shared/critest is not beside the checkout")
    conf = load(CRITEST_CONF)
    assert conf.unqualified_search_registries() == ["docker.io"]
    assert conf.endpoints("registry.k8s.io/pause") == [
        Endpoint("127.0.0.1:5000/registry.k8s.io/pause", insecure=True, mirror=False)]
    (ep,) = conf.endpoints("docker.io/library/busybox")
    assert (ep.host, ep.repository) == ("127.0.0.1:5000", "docker.io/library/busybox")
    # gcr.io must not capture a registry whose name merely starts with it.
    assert conf.endpoints("gcr.io.example.com/x")[0].location == "gcr.io.example.com/x"


CONF = """
unqualified-search-registries = ["quay.io", "docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror-a.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "mirror-b.local"

[[registry]]
prefix = "docker.io/library/forbidden"
blocked = true

[[registry]]
prefix = "example.com/team"
location = "internal.example.com/team-mirror"

[[registry]]
prefix = "*.corp.example"
insecure = true
"""


def test_mirrors_in_order_then_location() -> None:
    conf = parse(CONF)
    assert [(e.location, e.insecure, e.mirror) for e in conf.endpoints("docker.io/library/x")] == [
        ("mirror-a.local:5000/hub/library/x", True, True),
        ("mirror-b.local/library/x", False, True),
        ("docker.io/library/x", False, False),
    ]


def test_longest_prefix_blocked_rewrite_wildcard_and_default() -> None:
    conf = parse(CONF)
    with pytest.raises(BlockedRegistry):
        conf.endpoints("docker.io/library/forbidden")
    assert conf.endpoints("docker.io/library/forbiddenfruit")[0].mirror  # not a component match
    assert conf.endpoints("example.com/team/app")[0].location == (
        "internal.example.com/team-mirror/app")
    assert conf.endpoints("example.com/other")[0].location == "example.com/other"
    (ep,) = conf.endpoints("reg.corp.example/app")
    assert ep.insecure and ep.location == "reg.corp.example/app"
    assert conf.unqualified_search_registries() == ["quay.io", "docker.io"]


@pytest.mark.parametrize("text,key", [
    ('unqualified-search-registries = "docker.io"', "unqualified-search-registries"),
    ('[[registry]]\ninsecure = "yes"\nlocation = "a"', "insecure"),
    ('[[registry]]\nblocked = true', "prefix or a location"),
    ('[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true', "mirror[0].location"),
    ("[[registry]\n", "registries.conf"),
])
def test_invalid_files_name_the_key(text: str, key: str) -> None:
    with pytest.raises(RegistriesConfError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse(text)


def test_missing_file_is_empty_and_edits_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "registries.conf"
    watcher = RegistriesConfWatcher(path)
    assert watcher.current().endpoints("quay.io/x")[0].location == "quay.io/x"
    path.write_text('[[registry]]\nprefix = "quay.io"\nlocation = "127.0.0.1:5000/quay"\n')
    assert watcher.current().endpoints("quay.io/x")[0].location == "127.0.0.1:5000/quay/x"
    path.write_text('[[registry]]\nprefix = "quay.io"\nlocation = "127.0.0.1:5001/q"\n')
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    assert watcher.current().endpoints("quay.io/x")[0].location == "127.0.0.1:5001/q/x"
    path.unlink()
    assert watcher.current().endpoints("quay.io/x")[0].location == "quay.io/x"
