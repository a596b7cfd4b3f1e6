"""``pycri inspect`` against a running pod of the real daemon, run as users run it (the `pycri`
entry point in a subprocess, pointed at the daemon's config), before and after the daemon is
stopped: what it reports must match what the kernel and the daemon's own answers say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cri.api import api_pb2
from sandbox.cgroups import shares_to_weight
from tests.e2e.containers import Pod, remove_pod, sc, start_pod
from tests.e2e.helpers import REPO, Daemon, pod_config

pytestmark = pytest.mark.e2e
NS = api_pb2.NamespaceMode
MEMORY = 64 << 20
POD_MEMORY = 256 << 20
QUOTA, PERIOD, SHARES = 50000, 100000, 512


def inspect(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cri", "inspect", "--config", str(daemon.config_path), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def inspect_json(daemon: Daemon, target: str) -> dict[str, Any]:
    done = inspect(daemon, "--json", target)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


@pytest.fixture
def shared_pid_pod(daemon: Daemon, image: str, tmp_path: Path) -> Iterator[Pod]:
    """A pod whose infra owns a PID namespace its containers may join (shareProcessNamespace)."""
    cfg = pod_config()
    cfg.linux.security_context.namespace_options.pid = NS.POD
    cfg.linux.resources.memory_limit_in_bytes = POD_MEMORY  # the pod cgroup's own
    pod = start_pod(daemon, tmp_path, cfg)
    try:
        yield pod
    finally:
        if daemon.proc is None:  # a failed test may leave it stopped
            daemon.start()
        remove_pod(pod)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"] if p["role"] == "container" else "infra": p for p in report["processes"]}


@pytest.mark.node
def test_inspect_pod_namespaces_limits_and_network(daemon: Daemon, shared_pid_pod: Pod) -> None:
    pod = shared_pid_pod
    limits = api_pb2.LinuxContainerResources(memory_limit_in_bytes=MEMORY, cpu_quota=QUOTA,
                                             cpu_period=PERIOD, cpu_shares=SHARES)
    own = pod.run("own-pid", ["sleep", "3600"], security=sc(), resources=limits)
    shared = pod.run("shared-pid", ["sleep", "3600"],
                     security=sc(namespace_options=api_pb2.NamespaceOption(pid=NS.POD)))
    done = pod.run("done", ["true"], security=sc())
    pod.wait_exit(done)
    ip = pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod.id),
                                 timeout=10).status.network.ip

    report = inspect_json(daemon, pod.id)
    assert report["kind"] == "pod"
    assert report["pod"]["id"] == pod.id
    assert report["pod"]["ips"][0] == ip
    procs = by_name(report)
    assert set(procs) == {"infra", "own-pid", "shared-pid", "done"}
    infra = procs["infra"]
    assert infra["running"]
    for name in ("own-pid", "shared-pid"):
        p = procs[name]
        assert p["running"], p
        ns = p["namespaces"]
        # As the kernel sees it, and as the report marks it.
        for kind in ("net", "ipc", "uts"):
            assert ns[kind]["inode"] == infra["namespaces"][kind]["inode"] \
                == ns_inode(p["pid"], kind)
            assert ns[kind]["sharing"] == "shared"
        assert ns["mnt"]["inode"] != infra["namespaces"]["mnt"]["inode"]
        assert ns["mnt"]["sharing"] == "private"
        assert ns["user"]["sharing"] == "host"
        assert p["id"] in p["cgroup"]["path"]
    assert procs["own-pid"]["namespaces"]["pid"]["sharing"] == "private"
    assert procs["own-pid"]["pid_namespace_mode"] == "container"
    assert procs["shared-pid"]["namespaces"]["pid"]["sharing"] == "shared"
    assert procs["shared-pid"]["namespaces"]["pid"]["inode"] == ns_inode(infra["pid"], "pid")
    assert infra["namespaces"]["net"]["inode"] == ns_inode(infra["pid"], "net")

    # The limits as set, read back; what was not set is unlimited.
    lim = procs["own-pid"]["cgroup"]["limits"]
    assert lim["memory"] == MEMORY
    assert lim["swap"] in (0, None)  # swap disabled; None: a kernel without swap accounting
    assert (lim["cpu_quota"], lim["cpu_period"]) == (QUOTA, PERIOD)
    if procs["own-pid"]["cgroup"]["version"] == 2:
        # runc converts the container's shares: 1.1 linearly, later ones (and pycri's pod
        # cgroups) by the curve that maps 1024 to 100.
        linear = 1 + (SHARES - 2) * 9999 // 262142
        assert lim["cpu_weight"] in (linear, shares_to_weight(SHARES))
    else:
        assert lim["cpu_shares"] == SHARES
    # No pids limit was asked for: cgroupfs leaves it unlimited, systemd gives every scope its
    # DefaultTasksMax. Either way the report says what the file says.
    cg = procs["own-pid"]["cgroup"]
    pids_dir = Path("/sys/fs/cgroup") if cg["version"] == 2 else Path("/sys/fs/cgroup/pids")
    pids_max = (pids_dir / cg["paths"].get("pids", cg["path"]).lstrip("/") / "pids.max")
    assert str(lim["pids"]) == pids_max.read_text().strip()
    if daemon.cgroup_driver == "cgroupfs":
        assert lim["pids"] == "max"
    assert procs["own-pid"]["cgroup"]["effective"]["memory"] == MEMORY
    unset = procs["shared-pid"]["cgroup"]
    assert unset["limits"]["memory"] == "max" and unset["limits"]["cpu_quota"] == "max"
    # ... but the pod cgroup holds it to the pod's limit.
    assert unset["effective"]["memory"] == POD_MEMORY

    # The exited container is reported as such, not as an error.
    assert procs["done"]["running"] is False
    assert procs["done"]["namespaces"] is None and procs["done"]["cgroup"] is None

    # The host end of the pod's eth0: a veth on the daemon's bridge.
    (eth0,) = [i for i in report["pod"]["interfaces"] if i["name"] == "eth0"]
    veth = Path("/sys/class/net") / eth0["host_peer"]
    assert eth0["host_peer"] and veth.is_dir()
    assert int((veth / "ifindex").read_text()) == eth0["host_peer_index"]
    assert eth0["bridge"] == daemon.bridge

    # The same answers with the daemon stopped (its pods run on under conmon).
    daemon.stop()
    try:
        assert inspect_json(daemon, pod.id) == report
        by_container = inspect_json(daemon, own[:10])
        assert by_container["kind"] == "container"
        assert [p["name"] for p in by_container["processes"]] == ["POD", "own-pid"]
        assert by_container["processes"] == [infra, procs["own-pid"]]
        ns_name = f"{pod.config.metadata.namespace}/{pod.config.metadata.name}"
        assert inspect_json(daemon, ns_name)["processes"] == report["processes"]
        human = inspect(daemon, shared)
        assert human.returncode == 0, human.stderr
        assert "shared-pid" in human.stdout and eth0["host_peer"] in human.stdout
    finally:
        daemon.start()


def test_inspect_unknown_target_is_exit_1(daemon: Daemon) -> None:
    done = inspect(daemon, "0123456789abcdef-not-there")
    assert done.returncode == 1
    assert "no pod or container '0123456789abcdef-not-there'" in done.stderr
    assert done.stdout == ""
