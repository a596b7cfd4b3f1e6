from __future__ import annotations

import asyncio
import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from cni.config import parse_conflist
from cni.errors import CNIError, CNIPluginError, CNIResultError
from cni.network import CNINetwork

# A fake plugin: logs every call, then acts on its config ("fail" / a result to print).
FAKE = f"""#!{sys.executable}
import json, os, sys
conf = json.load(sys.stdin)
with open(conf["log"], "a") as fh:
    fh.write(json.dumps({{"type": conf["type"], "cmd": os.environ["CNI_COMMAND"],
                          "netns": os.environ["CNI_NETNS"], "args": os.environ["CNI_ARGS"],
                          "conf": conf}}) + "\\n")
cmd = os.environ["CNI_COMMAND"]
if conf.get("fail") == cmd:
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 11, "msg": "told to fail"}}))
    sys.exit(1)
if cmd == "ADD":
    res = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}}],
        "ips": [{{"address": conf["ip"], "interface": 0}}]}}
    res.setdefault("dns", {{}})["search"] = res.get("dns", {{}}).get("search", []) + [conf["type"]]
    print(json.dumps(res))
"""

ARGS = {"IgnoreUnknown": "1", "K8S_POD_NAME": "p"}
CAPS: dict[str, Any] = {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
                        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2**31 - 1},
                        "cgroupPath": "/kubepods/x"}


def make(tmp_path: Path, version: str = "1.0.0", **extra: dict[str, Any]) -> tuple[CNINetwork, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in ("fake-a", "fake-b"):
        (bindir / name).write_text(FAKE)
        (bindir / name).chmod(0o755)
    log = tmp_path / "log"
    conf = {"cniVersion": version, "name": "testnet", "plugins": [
        {"type": "fake-a", "ip": "10.9.0.4/24", "log": str(log), "cniVersion": "9.9.9", "name": "x",
         **extra.get("a", {})},
        {"type": "fake-b", "log": str(log), "capabilities": {"portMappings": True, "dns": True,
                                                            "bandwidth": False},
         **extra.get("b", {})},
    ]}
    cfg = parse_conflist(json.dumps(conf).encode(), tmp_path / "10-test.conflist")
    return CNINetwork(cfg, [tmp_path / "none", bindir], tmp_path / "cache", timeout=20), log


def calls(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_add_chains_plugins_and_caches(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    netns = tmp_path / "ns"
    result = asyncio.run(net.add("cid1", netns, "eth0", args=ARGS, capability_args=CAPS))
    assert [str(ip) for ip in result.pod_ips("eth0")] == ["10.9.0.4"]
    assert result.dns.search == ["fake-a", "fake-b"]
    a, b = calls(log)
    assert (a["type"], a["cmd"], b["type"], b["cmd"]) == ("fake-a", "ADD", "fake-b", "ADD")
    assert a["conf"]["name"] == "testnet" and a["conf"]["cniVersion"] == "1.0.0"
    assert "prevResult" not in a["conf"] and "runtimeConfig" not in a["conf"]
    assert b["conf"]["prevResult"]["dns"]["search"] == ["fake-a"]
    # Only the declared, enabled capabilities reach the plugin.
    assert b["conf"]["runtimeConfig"] == {"portMappings": CAPS["portMappings"]}
    assert a["netns"] == str(netns) and a["args"] == "IgnoreUnknown=1;K8S_POD_NAME=p"

    entry_path = tmp_path / "cache" / "results" / "testnet-cid1-eth0"
    entry = json.loads(entry_path.read_text())
    assert entry["kind"] == "cniCacheV1"
    assert (entry["containerId"], entry["ifName"], entry["networkName"]) == ("cid1", "eth0", "testnet")
    assert json.loads(base64.b64decode(entry["config"]))["name"] == "testnet"
    assert entry["result"] == result.raw == net.cached_result("cid1", "eth0")
    assert entry["capabilityArgs"] == CAPS
    assert [list(p) for p in ARGS.items()] == entry["cniArgs"]
    assert stat.S_IMODE(entry_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    assert [p.name for p in entry_path.parent.iterdir()] == ["testnet-cid1-eth0"]  # no tmp files left


def test_check_and_delete(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    netns = tmp_path / "ns"
    with pytest.raises(CNIError, match="no cached"):
        asyncio.run(net.check("cid1", netns, "eth0", args=ARGS, capability_args=CAPS))
    result = asyncio.run(net.add("cid1", netns, "eth0", args=ARGS, capability_args=CAPS))
    log.unlink()
    asyncio.run(net.check("cid1", netns, "eth0", args=ARGS, capability_args=CAPS))
    assert [(c["type"], c["cmd"]) for c in calls(log)] == [("fake-a", "CHECK"), ("fake-b", "CHECK")]
    assert all(c["conf"]["prevResult"] == result.raw for c in calls(log))
    log.unlink()
    asyncio.run(net.delete("cid1", tmp_path / "gone", "eth0", args=ARGS, capability_args=CAPS))
    assert [(c["type"], c["cmd"]) for c in calls(log)] == [("fake-b", "DEL"), ("fake-a", "DEL")]
    assert all(c["conf"]["prevResult"] == result.raw for c in calls(log))
    # The netns path no longer exists: DEL goes without CNI_NETNS (optional for DEL).
    assert all(c["netns"] == "" for c in calls(log))
    assert net.cached_result("cid1", "eth0") is None
    assert not (tmp_path / "cache" / "results" / "testnet-cid1-eth0").exists()
    # Idempotent: a second DEL (no cache, no prevResult) is fine.
    log.unlink()
    asyncio.run(net.delete("cid1", tmp_path / "gone", "eth0", args=ARGS, capability_args=CAPS))
    assert all("prevResult" not in c["conf"] for c in calls(log))


def test_old_version_no_check_no_prevresult_on_del(tmp_path: Path) -> None:
    net, log = make(tmp_path, version="0.3.1")
    asyncio.run(net.add("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    log.unlink()
    asyncio.run(net.check("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    assert calls(log) == []
    asyncio.run(net.delete("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    assert [c["cmd"] for c in calls(log)] == ["DEL", "DEL"]
    assert all("prevResult" not in c["conf"] for c in calls(log))


def test_failed_add_keeps_config_for_del(tmp_path: Path) -> None:
    net, _log = make(tmp_path, b={"fail": "ADD"})
    with pytest.raises(CNIPluginError) as info:
        asyncio.run(net.add("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    assert info.value.code == 11 and info.value.plugin == "fake-b"
    assert net.cached_result("cid1", "eth0") is None
    rebuilt = CNINetwork.from_cache(tmp_path / "cache", "cid1", "eth0", [tmp_path / "bin"], timeout=5)
    assert rebuilt is not None and rebuilt.name == "testnet"
    assert [p["type"] for p in rebuilt.config.plugins] == ["fake-a", "fake-b"]


def test_del_tries_every_plugin_and_keeps_cache_on_error(tmp_path: Path) -> None:
    net, log = make(tmp_path, b={"fail": "DEL"})
    asyncio.run(net.add("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    log.unlink()
    with pytest.raises(CNIPluginError, match="told to fail"):
        asyncio.run(net.delete("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    assert [(c["type"], c["cmd"]) for c in calls(log)] == [("fake-b", "DEL"), ("fake-a", "DEL")]
    assert net.cached_result("cid1", "eth0") is not None


def test_from_cache_after_config_removed(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    assert CNINetwork.from_cache(tmp_path / "cache", "cid1", "eth0", [tmp_path / "bin"], timeout=5) is None
    asyncio.run(net.add("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    rebuilt = CNINetwork.from_cache(tmp_path / "cache", "cid1", "eth0", [tmp_path / "bin"], timeout=5)
    assert rebuilt is not None and rebuilt.name == "testnet"
    assert rebuilt.cached_result("cid1", "eth0") == net.cached_result("cid1", "eth0")
    log.unlink()
    asyncio.run(rebuilt.delete("cid1", tmp_path / "ns", "eth0", args=ARGS, capability_args={}))
    assert [c["type"] for c in calls(log)] == ["fake-b", "fake-a"]
    assert CNINetwork.from_cache(tmp_path / "cache", "cid1", "eth0", [tmp_path / "bin"], timeout=5) is None


def test_corrupt_cache_entry_ignored(tmp_path: Path) -> None:
    net, _ = make(tmp_path)
    results = tmp_path / "cache" / "results"
    results.mkdir(parents=True)
    (results / "testnet-cid1-eth0").write_text("{garbage")
    assert net.cached_result("cid1", "eth0") is None
    assert CNINetwork.from_cache(tmp_path / "cache", "cid1", "eth0", [], timeout=5) is None


@pytest.mark.parametrize(("cid", "ifname"), [("../x", "eth0"), ("a/b", "eth0"), ("", "eth0"),
                                             ("cid", "a/b"), ("cid", "x" * 16), ("cid", "..")])
def test_bad_ids_rejected(tmp_path: Path, cid: str, ifname: str) -> None:
    net, log = make(tmp_path)
    with pytest.raises(CNIError):
        asyncio.run(net.add(cid, tmp_path / "ns", ifname, args=ARGS, capability_args={}))
    assert calls(log) == []


@pytest.mark.parametrize(("kind", "expected"), [("netns", "/proc/self/ns/net"), ("file", ""),
                                                ("missing", ""), ("none", "")])
def test_del_passes_netns_only_while_it_is_one(tmp_path: Path, kind: str, expected: str) -> None:
    net, log = make(tmp_path)
    stale = tmp_path / "stale-netns"
    stale.write_text("")  # what an unmounted /run/netns/<name> leaves behind
    path = {"netns": Path("/proc/self/ns/net"), "file": stale, "missing": tmp_path / "gone",
            "none": None}[kind]
    asyncio.run(net.delete("cid1", path, "eth0"))
    assert [c["netns"] for c in calls(log)] == [expected, expected]


def test_del_defaults_to_the_args_cached_at_add(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    asyncio.run(net.add("cid1", tmp_path / "ns", args=ARGS, capability_args=CAPS))
    log.unlink()
    asyncio.run(net.delete("cid1", tmp_path / "ns"))
    b, a = calls(log)
    assert a["args"] == b["args"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert b["conf"]["runtimeConfig"] == {"portMappings": CAPS["portMappings"]}
    # Explicit arguments win; without a cache entry the defaults are empty.
    log.unlink()
    asyncio.run(net.delete("cid1", tmp_path / "ns", args={"K8S_POD_NAME": "q"}, capability_args={}))
    assert [c["args"] for c in calls(log)] == ["K8S_POD_NAME=q"] * 2
    assert all("runtimeConfig" not in c["conf"] for c in calls(log))
    log.unlink()
    asyncio.run(net.delete("cid1", tmp_path / "ns"))
    assert [c["args"] for c in calls(log)] == ["", ""]


def test_add_defaults_and_needs_a_netns(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    result = asyncio.run(net.add("cid1", tmp_path / "ns"))
    assert [str(ip) for ip in result.pod_ips("eth0")] == ["10.9.0.4"]
    assert [c["args"] for c in calls(log)] == ["", ""]
    with pytest.raises(CNIError, match="namespace"):
        asyncio.run(net.add("cid2", ""))
    with pytest.raises(CNIError, match="namespace"):
        asyncio.run(net.check("cid1", Path("")))


def test_unreadable_result_is_still_cached_for_del(tmp_path: Path) -> None:
    net, log = make(tmp_path, a={"ip": "not-an-ip"})
    with pytest.raises(CNIResultError):
        asyncio.run(net.add("cid1", tmp_path / "ns"))
    cached = net.cached_result("cid1")
    assert cached is not None and cached["ips"][0]["address"] == "not-an-ip"
    log.unlink()
    asyncio.run(net.delete("cid1", None))
    assert all(c["conf"]["prevResult"] == cached for c in calls(log))


def test_disable_check(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    cfg = parse_conflist(json.dumps({**net.config.raw, "disableCheck": True}).encode(), tmp_path / "x")
    net = CNINetwork(cfg, net.plugin_dirs, net.cache_dir, timeout=20)
    asyncio.run(net.add("cid1", tmp_path / "ns"))
    log.unlink()
    asyncio.run(net.check("cid1", tmp_path / "ns"))
    assert calls(log) == []


def test_missing_plugin_fails_add_and_del_still_reaches_the_others(tmp_path: Path) -> None:
    net, log = make(tmp_path, b={"type": "fake-missing"})
    with pytest.raises(CNIError, match=r"'fake-missing' not found in"):
        asyncio.run(net.add("cid1", tmp_path / "ns"))
    # fake-a ran (ADD is sequential); the caller's DEL then reaches fake-a despite fake-b missing.
    log.unlink()
    with pytest.raises(CNIError, match="fake-missing"):
        asyncio.run(net.delete("cid1", tmp_path / "ns"))
    assert [c["type"] for c in calls(log)] == ["fake-a"]


def test_bad_cni_args_refused_before_anything_runs(tmp_path: Path) -> None:
    net, log = make(tmp_path)
    with pytest.raises(ValueError, match="forbidden"):
        asyncio.run(net.add("cid1", tmp_path / "ns", args={"K8S_POD_NAME": "a;IP=10.0.0.9"}))
    assert calls(log) == [] and not (tmp_path / "cache" / "results" / "testnet-cid1-eth0").exists()
