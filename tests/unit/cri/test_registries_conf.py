from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cri.image import registries_conf
from cri.image.reference import parse_normalized
from cri.image.registries_conf import (
    BlockedRegistry,
    Endpoint,
    RegistriesConf,
    RegistriesConfError,
    RegistriesConfWatcher,
    parse,
)

CRITEST_CONF = Path(__file__).resolve().parents[4] / "shared" / "critest" / "registries.conf"


def test_the_critest_mirror_config() -> None:
    if not CRITEST_CONF.exists():
        pytest.skip("shared/critest is not beside the checkout")
    conf = RegistriesConf.load(CRITEST_CONF)
    assert conf.unqualified_search_registries() == ["docker.io"]
    pause = parse_normalized("registry.k8s.io/pause:3.9")
    assert conf.endpoints(pause.name) == [
        Endpoint("127.0.0.1:5000/registry.k8s.io/pause", insecure=True, mirror=False)]
    (ep,) = conf.endpoints(parse_normalized("docker.io/library/busybox").name)
    assert ep == Endpoint("127.0.0.1:5000/docker.io/library/busybox", insecure=True, mirror=False)
    assert (ep.host, ep.repository) == ("127.0.0.1:5000", "docker.io/library/busybox")
    (ep,) = conf.endpoints(parse_normalized("busybox").name)  # short name -> docker.io/library
    assert ep.location == "127.0.0.1:5000/docker.io/library/busybox"
    # gcr.io must not capture a registry whose name merely starts with it.
    assert conf.endpoints("gcr.io.example.com/x") == [
        Endpoint("gcr.io.example.com/x", insecure=False, mirror=False)]
    assert conf.endpoints("quay.io/x") == [Endpoint("quay.io/x", insecure=False, mirror=False)]


CONF = """
unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "enforcing"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror-a.local:5000/hub/"
insecure = true
[[registry.mirror]]
location = "mirror-b.local"

[[registry]]
prefix = "docker.io/library/forbidden"
blocked = true

[[registry]]
prefix = "docker.io/library/special"
location = "special.local/lib"

[[registry]]
prefix = "example.com/team"
location = "internal.example.com/team-mirror"

[[registry]]
location = "only-location.io/ns"
insecure = true

[[registry]]
prefix = "*.corp.example"
insecure = true
[[registry.mirror]]
location = "cache.corp.local/corp"

[[registry]]
prefix = "*.a.corp.example"
blocked = true

[[registry]]
prefix = "digests.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m1.local"
[[registry.mirror]]
location = "m2.local"
pull-from-mirror = "tag-only"
"""


def locs(eps: list[Endpoint]) -> list[tuple[str, bool, bool]]:
    return [(e.location, e.insecure, e.mirror) for e in eps]


def test_mirrors_in_order_then_location() -> None:
    conf = parse(CONF)
    assert locs(conf.endpoints("docker.io/library/x")) == [
        ("mirror-a.local:5000/hub/library/x", True, True),
        ("mirror-b.local/library/x", False, True),
        ("docker.io/library/x", False, False),
    ]
    assert conf.unqualified_search_registries() == ["quay.io", "docker.io"]


def test_longest_prefix_wins_at_component_boundaries() -> None:
    conf = parse(CONF)
    # The longer docker.io/library/special entry wins and brings no mirrors.
    assert locs(conf.endpoints("docker.io/library/special")) == [
        ("special.local/lib", False, False)]
    assert locs(conf.endpoints("docker.io/library/special/sub")) == [
        ("special.local/lib/sub", False, False)]
    # "specialist" is not under the "special" component: the docker.io entry applies.
    assert conf.endpoints("docker.io/library/specialist")[0].mirror
    assert conf.endpoints("example.com/team/app")[0].location == (
        "internal.example.com/team-mirror/app")
    assert conf.endpoints("example.com/teams/app")[0].location == "example.com/teams/app"
    assert locs(conf.endpoints("only-location.io/ns/img")) == [
        ("only-location.io/ns/img", True, False)]
    assert conf.endpoints("only-location.io/other")[0].insecure is False


def test_blocked() -> None:
    conf = parse(CONF)
    with pytest.raises(BlockedRegistry, match="forbidden"):
        conf.endpoints("docker.io/library/forbidden")
    with pytest.raises(BlockedRegistry):
        conf.endpoints("docker.io/library/forbidden/deeper")
    assert conf.endpoints("docker.io/library/forbiddenfruit")[0].mirror  # not a component match


def test_wildcard_prefixes() -> None:
    conf = parse(CONF)
    assert locs(conf.endpoints("reg.corp.example/app")) == [
        ("cache.corp.local/corp/app", False, True),
        ("reg.corp.example/app", True, False),
    ]
    assert locs(conf.endpoints("x.y.corp.example:5000/app")) == [
        ("cache.corp.local/corp/app", False, True),
        ("x.y.corp.example:5000/app", True, False),
    ]
    # Only sub-domains: not the domain itself, nor a host that merely ends alike.
    assert locs(conf.endpoints("corp.example/app")) == [("corp.example/app", False, False)]
    assert locs(conf.endpoints("evilcorp.example/app")) == [("evilcorp.example/app", False, False)]
    assert locs(conf.endpoints("mirror.io/reg.corp.example/app"))[0][0] == (
        "mirror.io/reg.corp.example/app")
    with pytest.raises(BlockedRegistry):  # the longer wildcard wins
        conf.endpoints("b.a.corp.example/app")


def test_digest_only_mirrors() -> None:
    conf = parse(CONF)
    assert locs(conf.endpoints("digests.io/a")) == [("digests.io/a", False, False)]
    assert locs(conf.endpoints("digests.io/a", by_digest=True)) == [
        ("m1.local/a", False, True), ("digests.io/a", False, False)]


@pytest.mark.parametrize("text,key", [
    ('unqualified-search-registries = "docker.io"', "unqualified-search-registries"),
    ('unqualified-search-registries = ["docker.io/x"]', "unqualified-search-registries[0]"),
    ('unqualified-search-registries = [1]', "unqualified-search-registries[0]"),
    ('registry = 1', "registry"),
    ('registry = [1]', "registry[0]"),
    ('[[registry]]\ninsecure = "yes"\nlocation = "a"', "registry[0].insecure"),
    ('[[registry]]\nblocked = 1\nlocation = "a"', "registry[0].blocked"),
    ('[[registry]]\nblocked = true', "prefix or a location"),
    ('[[registry]]\nprefix = "https://a.io"', "registry[0].prefix"),
    ('[[registry]]\nlocation = "a.io/x:tag"', "registry[0].location"),
    ('[[registry]]\nprefix = "a.io/x@sha256:ab"', "registry[0].prefix"),
    ('[[registry]]\nprefix = "*.a.io"\nlocation = "b.io"', "registry[0].location"),
    ('[[registry]]\nprefix = "*.a.io/ns"', "registry[0].prefix"),
    ('[[registry]]\nprefix = "a.*.io"', "registry[0].prefix"),
    ('[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true', "mirror[0].location"),
    ('[[registry]]\nlocation = "a"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "x"',
     "mirror[0].pull-from-mirror"),
    ('[[registry]]\nlocation = "a"\n[[registry]]\nprefix = "a"\nlocation = "b"',
     "registry[1].prefix"),
    ("[[registry]\n", "not valid TOML"),
])
def test_invalid_files_name_the_file_and_key(text: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(RegistriesConfError, match=r"^my\.conf: .*" + re.escape(key)):
        parse(text, "my.conf")
    path = tmp_path / "registries.conf"
    path.write_text(text)
    with pytest.raises(RegistriesConfError, match=re.escape(str(path))):
        RegistriesConf.load(path)


def test_missing_file_is_empty() -> None:
    conf = RegistriesConf.load(Path("/nonexistent/registries.conf"))
    assert conf.unqualified_search_registries() == []
    assert conf.endpoints("quay.io/x") == [Endpoint("quay.io/x", insecure=False, mirror=False)]


def test_watcher_rereads_only_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real_load = registries_conf.load

    def counting_load(path: Path) -> RegistriesConf:
        reads.append(path)
        return real_load(path)

    monkeypatch.setattr(registries_conf, "load", counting_load)
    path = tmp_path / "registries.conf"
    watcher = RegistriesConfWatcher(path)
    assert watcher.current().endpoints("quay.io/x")[0].location == "quay.io/x"
    path.write_text('[[registry]]\nprefix = "quay.io"\nlocation = "127.0.0.1:5000/quay"\n')
    first = watcher.current()
    assert first.endpoints("quay.io/x")[0].location == "127.0.0.1:5000/quay/x"
    assert watcher.current() is first and len(reads) == 1  # unchanged: no re-read
    # Same size, different content; a forced mtime so a coarse clock cannot hide the edit.
    path.write_text('[[registry]]\nprefix = "quay.io"\nlocation = "127.0.0.1:5001/quay"\n')
    os.utime(path, ns=(1, 1))
    assert watcher.current().endpoints("quay.io/x")[0].location == "127.0.0.1:5001/quay/x"
    assert len(reads) == 2
    # A broken edit raises (every time) until fixed.
    path.write_text("[[registry]\n")
    with pytest.raises(RegistriesConfError):
        watcher.current()
    with pytest.raises(RegistriesConfError):
        watcher.current()
    path.write_text('unqualified-search-registries = ["docker.io"]\n')
    assert watcher.current().unqualified_search_registries() == ["docker.io"]
    path.unlink()
    assert watcher.current().endpoints("quay.io/x")[0].location == "quay.io/x"
