from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cni import cache
from cni.errors import CNIError

CONFIG = b'{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"bridge"}]}'
RESULT: dict[str, Any] = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}


def entry(cid: str = "cid1", network: str = "net1", ifname: str = "eth0",
          result: dict[str, Any] | None = None) -> cache.CacheEntry:
    return cache.CacheEntry(container_id=cid, ifname=ifname, network_name=network, config=CONFIG,
                            cni_args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "p")],
                            capability_args={"portMappings": [{"hostPort": 80}]},
                            result=result, netns="/run/netns/x")


def test_libcni_layout_and_modes(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cni"
    path = cache.write_entry(cache_dir, entry(result=RESULT))
    assert path == cache_dir / "results" / "net1-cid1-eth0"
    obj = json.loads(path.read_text())
    assert obj == {
        "kind": "cniCacheV1", "containerId": "cid1", "config": base64.b64encode(CONFIG).decode(),
        "ifName": "eth0", "networkName": "net1", "netns": "/run/netns/x",
        "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p"]],
        "capabilityArgs": {"portMappings": [{"hostPort": 80}]}, "result": RESULT,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert cache.read_entry(cache_dir, "net1", "cid1", "eth0") == entry(result=RESULT)


def test_existing_cache_dir_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "var-lib-cni"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "results").mkdir(mode=0o755)
    cache.write_entry(shared, entry())
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "results").stat().st_mode) == 0o700


def test_rewrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cache.write_entry(tmp_path, entry(result=RESULT))
    before = path.read_bytes()

    def broken_rename(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="No space"):
        cache.write_entry(tmp_path, entry(result=None))
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old entry survives intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["net1-cid1-eth0"]  # no temp file left


def test_remove_is_idempotent(tmp_path: Path) -> None:
    cache.write_entry(tmp_path, entry())
    cache.remove_entry(tmp_path, "net1", "cid1", "eth0")
    cache.remove_entry(tmp_path, "net1", "cid1", "eth0")
    assert cache.read_entry(tmp_path, "net1", "cid1", "eth0") is None


def test_list_and_find(tmp_path: Path) -> None:
    for e in (entry("c1", "net-a"), entry("c1", "net-b", "net1"), entry("c2", "net-a"), entry("c1-x")):
        cache.write_entry(tmp_path, e)
    results = tmp_path / "results"
    (results / "garbage-c1-eth0").write_text("{not json")
    (results / "renamed-c1-eth0").write_bytes((results / "net-a-c2-eth0").read_bytes())
    (results / ".net-a-c1-eth0.123.tmp").write_text("{}")
    names = [(e.network_name, e.container_id, e.ifname) for e in cache.list_entries(tmp_path, "c1")]
    assert names == [("net-a", "c1", "eth0"), ("net-b", "c1", "net1")]
    assert len(cache.list_entries(tmp_path)) == 4
    found = cache.find_entry(tmp_path, "c1", "eth0")
    assert found is not None and found.network_name == "net-a"
    assert cache.find_entry(tmp_path, "c2", "net1") is None
    assert cache.list_entries(tmp_path / "missing") == []


def test_corrupt_and_foreign_entries_read_as_absent(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "net1-cid1-eth0").write_text(json.dumps({"kind": "somethingElse"}))
    assert cache.read_entry(tmp_path, "net1", "cid1", "eth0") is None
    (results / "net1-cid1-eth0").write_text(json.dumps({"kind": "cniCacheV1", "config": "!!"}))
    assert cache.read_entry(tmp_path, "net1", "cid1", "eth0") is None


@pytest.mark.parametrize(("network", "cid", "ifname"), [
    ("../etc", "c", "eth0"), ("n", "../c", "eth0"), ("n", "c/d", "eth0"), ("n", "", "eth0"),
    ("n", "c", "eth/0"), ("n", "c", "eth:0"), ("n", "c", "a b"), ("n", "c", "x" * 16), ("n", "c", ".."),
    ("", "c", "eth0"),
])
def test_ids_that_could_escape_are_refused(tmp_path: Path, network: str, cid: str, ifname: str) -> None:
    with pytest.raises(CNIError):
        cache.entry_path(tmp_path, network, cid, ifname)
