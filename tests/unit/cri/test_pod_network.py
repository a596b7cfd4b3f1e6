"""PodNetwork readiness: the configured plugin dirs decide whether a CNI config is usable."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cri.config import Config
from cri.runtime.network import PodNetwork

CONFLIST = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
    {"type": "bridge", "bridge": "cni-test0", "ipam": {"type": "host-local",
                                                       "subnet": "10.88.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": True}},
]}


def _network(tmp_path: Path) -> tuple[PodNetwork, Path, list[Path]]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(CONFLIST))
    plugin_dirs = [tmp_path / "opt-cni-bin", tmp_path / "usr-lib-cni"]
    for d in plugin_dirs:
        d.mkdir()
    config = Config(root=str(tmp_path / "root"))
    config.network.conf_dir = str(conf_dir)
    config.network.plugin_dirs = [str(d) for d in plugin_dirs]
    return PodNetwork(config), conf_dir, plugin_dirs


def _install(plugin_dir: Path, name: str) -> None:
    binary = plugin_dir / name
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)


def test_a_missing_plugin_binary_makes_the_network_not_ready(tmp_path: Path) -> None:
    net, _, (first, second) = _network(tmp_path)
    r = net.readiness()
    assert not r.ready and r.network == ""
    assert "10-podnet.conflist" in r.message
    assert f"CNI plugin 'bridge' not found in {first}, {second}" in r.message
    # Installed into a plugin dir later: seen at the next check, one missing binary at a time
    # (the IPAM plugin counts too).
    _install(second, "bridge")
    _install(first, "portmap")
    r = net.readiness()
    assert not r.ready and f"CNI plugin 'host-local' not found in {first}, {second}" in r.message
    _install(first, "host-local")
    r = net.readiness()
    assert (r.ready, r.message, r.network) == (True, "", "podnet")


def test_a_removed_plugin_takes_the_readiness_back(tmp_path: Path) -> None:
    net, _, (first, second) = _network(tmp_path)
    for name in ("bridge", "host-local", "portmap"):
        _install(second, name)
    assert net.readiness().ready
    # The dir's mtime is set apart by hand: removing within one tick of the installs above
    # would leave it as it was, which a real removal (long after an install) does not.
    (second / "portmap").unlink()
    st = second.stat()
    os.utime(second, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    r = net.readiness()
    assert not r.ready and f"CNI plugin 'portmap' not found in {first}, {second}" in r.message


def test_a_plugin_outside_the_configured_dirs_does_not_count(tmp_path: Path) -> None:
    net, _, _ = _network(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("bridge", "host-local", "portmap"):
        _install(elsewhere, name)
    assert not net.readiness().ready
