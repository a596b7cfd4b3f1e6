from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandbox import podfiles
from sandbox.errors import SandboxError


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(
    "hostname", ["web-0", "a", "Node-1.Example.com", "x" * 63, "a." * 31 + "ab", "0123"]
)
def test_hostname_written(tmp_path: Path, hostname: str) -> None:
    path = podfiles.write_hostname(tmp_path, hostname)
    assert path == tmp_path / "hostname"
    assert path.read_text() == hostname + "\n"
    assert _mode(path) == 0o644


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "x" * 65,
        "a" * 64 + ".b",
        "-web",
        "web-",
        "we_b",
        "web\nevil",
        "web\0",
        "a..b",
        ".a",
        "a.",
        "wéb",
        "web 1",
        "x" * 64 + "y",
    ],
)
def test_hostname_refused(tmp_path: Path, hostname: str) -> None:
    with pytest.raises(podfiles.InvalidPodFile) as info:
        podfiles.write_hostname(tmp_path, hostname)
    assert isinstance(info.value, SandboxError) and isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_resolv_conf_from_dns_config(tmp_path: Path) -> None:
    path = podfiles.write_resolv_conf(
        tmp_path,
        ["10.96.0.10", "fd00::a"],
        ["ns.svc.cluster.local", "svc.cluster.local"],
        ["ndots:5", "edns0"],
        host_resolv=tmp_path / "nope",
    )
    assert path.read_text() == (
        "nameserver 10.96.0.10\n"
        "nameserver fd00::a\n"
        "search ns.svc.cluster.local svc.cluster.local\n"
        "options ndots:5 edns0\n"
    )
    assert _mode(path) == 0o644


def test_any_field_is_enough(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.write_text("nameserver 1.1.1.1\n")
    path = podfiles.write_resolv_conf(tmp_path, [], [], ["ndots:2"], host_resolv=host)
    assert path.read_text() == "options ndots:2\n"


def test_host_file_copied_when_no_dns_config(tmp_path: Path) -> None:
    host = tmp_path / "host-resolv.conf"
    host.write_text("# host\nnameserver 192.0.2.1\nsearch example.com\n")
    out = tmp_path / "pod"
    out.mkdir()
    path = podfiles.write_resolv_conf(out, [], [], [], host_resolv=host)
    assert path.read_bytes() == host.read_bytes()
    assert _mode(path) == 0o644


def test_missing_host_file_gives_empty_file(tmp_path: Path) -> None:
    path = podfiles.write_resolv_conf(tmp_path, [], [], [], host_resolv=tmp_path / "missing")
    assert path.read_text() == ""


@pytest.mark.parametrize(
    ("servers", "searches", "options"),
    [
        (["10.0.0.1\nnameserver 6.6.6.6"], [], []),
        (["10.0.0.1\0"], [], []),
        (["dns.example.com"], [], []),
        (["10.0.0.256"], [], []),
        ([" 10.0.0.1"], [], []),
        ([], ["a.local\noptions ndots:0"], []),
        ([], ["a.local\rnameserver 6.6.6.6"], []),
        ([], ["a local"], []),
        ([], [""], []),
        ([], ["a\0b"], []),
        ([], [], ["ndots:5\nnameserver 6.6.6.6"]),
        ([], [], ["ndots:5 rotate"]),
        ([], [], ["\tndots:5"]),
        ([], ["x" * 256], []),
        ([], ["dömain.de"], []),
    ],
)
def test_injection_refused(
    tmp_path: Path, servers: list[str], searches: list[str], options: list[str]
) -> None:
    with pytest.raises(podfiles.InvalidPodFile):
        podfiles.write_resolv_conf(tmp_path, servers, searches, options)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    first = podfiles.write_resolv_conf(tmp_path, ["10.0.0.1"], [], [])
    before = first.stat().st_ino
    second = podfiles.write_resolv_conf(tmp_path, ["10.0.0.2"], [], [])
    assert second.read_text() == "nameserver 10.0.0.2\n"
    assert second.stat().st_ino != before  # a new file renamed over, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resolv.conf"]  # no temp left over
