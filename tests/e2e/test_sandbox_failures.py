"""Failure paths a node operator cares about: the netns or the CNI config gone before Stop,
a daemon killed in the middle of RunPodSandbox, bad pod files. Nothing may leak."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.helpers import Daemon, pod_config
from tests.e2e.test_sandbox import remove, run, status, traces

pytestmark = pytest.mark.e2e


def leases(daemon: Daemon) -> list[str]:
    return [p.name for p in daemon.ipam_dir.rglob("*") if p.is_file() and p.name[0].isdigit()]


def test_stop_releases_the_lease_when_the_netns_is_gone(daemon: Daemon, rt) -> None:
    cfg = pod_config()
    pod_id = run(rt, cfg)
    st = status(rt, pod_id, True)
    ip, ns = st.status.network.ip, json.loads(st.info["info"])["netNamespacePath"]
    assert ip in leases(daemon)
    subprocess.run(["umount", "-l", ns], check=True)
    os.unlink(ns)
    remove(rt, pod_id)
    assert ip not in leases(daemon)
    assert traces(daemon, pod_id, ip, cfg.metadata.uid) == []


def test_stop_releases_the_lease_when_the_cni_config_is_gone(daemon: Daemon, rt) -> None:
    cfg = pod_config()
    pod_id = run(rt, cfg)
    ip = status(rt, pod_id).status.network.ip
    conf = daemon.conf_dir / "10-e2e.conflist"
    saved = conf.read_text()
    conf.unlink()
    try:
        remove(rt, pod_id)  # DEL runs from the cached config and result
    finally:
        conf.write_text(saved)
    assert ip not in leases(daemon)
    assert traces(daemon, pod_id, ip, cfg.metadata.uid) == []


def test_bad_dns_config_is_invalid_argument(daemon: Daemon, rt) -> None:
    cfg = pod_config()
    cfg.dns_config.servers.append("10.0.0.10\nnameserver 6.6.6.6")
    with pytest.raises(grpc.RpcError) as err:
        run(rt, cfg)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    good = pod_config()
    good.dns_config.servers.append("10.96.0.10")
    good.dns_config.searches.extend(["e2e.svc.cluster.local", "svc.cluster.local"])
    good.dns_config.options.append("ndots:5")
    pod_id = run(rt, good)
    try:
        text = (daemon.runroot / "sandboxes" / pod_id / "resolv.conf").read_text()
        assert "nameserver 10.96.0.10" in text
        assert "search e2e.svc.cluster.local svc.cluster.local" in text
        assert "options ndots:5" in text
    finally:
        remove(rt, pod_id)


SLOW_PLUGIN = """#!/bin/sh
# ADD hangs (a wedged plugin); everything else succeeds at once.
if [ "$CNI_COMMAND" = ADD ]; then touch "$MARK"; exec sleep 600; fi
echo '{"cniVersion": "1.0.0"}'
"""


def test_daemon_killed_mid_run_leaves_nothing_after_restart(daemon: Daemon, rt) -> None:
    mark = daemon.base / "slow-add-started"
    plugin = daemon.plugin_dir / "e2e-slow"
    plugin.write_text(SLOW_PLUGIN.replace("$MARK", str(mark)))
    plugin.chmod(0o755)
    slow_conf = daemon.conf_dir / "00-slow.conflist"
    slow_conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": "slow",
                                     "plugins": [{"type": "e2e-slow"}]}))
    cfg = pod_config()
    errors: list[grpc.RpcError] = []

    def call() -> None:
        try:
            run(rt, cfg)
        except grpc.RpcError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), "the slow ADD never started"
        # What the half-made pod recorded before making anything: its id and netns pin.
        (meta_file,) = (daemon.root / "sandboxes").glob("*/meta.json")
        meta = json.loads(meta_file.read_text())
        assert Path(meta["netns_path"]).exists()
        daemon.stop(kill=True)  # kill -9 while the pod is half made
        t.join(30)
        assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE
        subprocess.run(["pkill", "-f", "sleep 600"], check=False)
    finally:
        slow_conf.unlink()
    daemon.start()
    rt = daemon.runtime()
    names = [p.metadata.name for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
    assert cfg.metadata.name not in names
    assert not list((daemon.root / "sandboxes").iterdir())
    assert not Path(meta["netns_path"]).exists(), "a netns pin leaked"
    assert not (daemon.runroot / "sandboxes" / meta["id"]).exists()
    assert meta["id"] not in Path("/proc/self/mountinfo").read_text()
    for hier in Path("/sys/fs/cgroup").iterdir():
        assert not (hier / daemon.cgroup_parent.lstrip("/") / f"pod{cfg.metadata.uid}").exists()
    # The name is free again: the kubelet's retry succeeds.
    remove(rt, run(rt, cfg))
