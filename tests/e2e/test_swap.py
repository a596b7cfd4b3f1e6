"""Swap is disabled for pods: with the host's swap on, a pod over its memory limit is
OOM-killed, never swapped (cgroup v1 here: memsw == limit, swappiness 0)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, pod_config
from tests.e2e.test_sandbox import remove, run

pytestmark = pytest.mark.e2e

MEMCG = Path("/sys/fs/cgroup/memory")
LIMIT = 64 << 20


@pytest.fixture
def host_swap(daemon: Daemon) -> Iterator[Path]:
    if not (MEMCG / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("needs cgroup v1 memory with swap accounting")
    swapfile = daemon.base / "swapfile"
    subprocess.run(["dd", "if=/dev/zero", f"of={swapfile}", "bs=1M", "count=256"],
                   check=True, capture_output=True)
    swapfile.chmod(0o600)
    subprocess.run(["mkswap", str(swapfile)], check=True, capture_output=True)
    on = subprocess.run(["swapon", str(swapfile)], capture_output=True, text=True)
    if on.returncode != 0:
        swapfile.unlink()
        pytest.skip(f"swapon not possible here: {on.stderr.strip()}")
    try:
        yield swapfile
    finally:
        subprocess.run(["swapoff", str(swapfile)], check=False)
        swapfile.unlink()


def test_pod_over_its_limit_is_oom_killed_not_swapped(daemon: Daemon, rt, host_swap) -> None:
    cfg = pod_config()
    cfg.linux.resources.memory_limit_in_bytes = LIMIT
    pod_id = run(rt, cfg)
    try:
        pod_cg = MEMCG / daemon.cgroup_parent.lstrip("/") / f"pod{cfg.metadata.uid}"
        assert int((pod_cg / "memory.limit_in_bytes").read_text()) == LIMIT
        assert int((pod_cg / "memory.memsw.limit_in_bytes").read_text()) == LIMIT
        assert int((pod_cg / "memory.swappiness").read_text()) == 0
        leaf = pod_cg / f"pycri-{pod_id}"
        # A process that joins the pod's cgroup, then touches 4x the limit.
        hog = subprocess.run(
            ["sh", "-c", f'echo $$ > {leaf}/cgroup.procs && exec "$0" -c "$1"', sys.executable,
             "b = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"],
            capture_output=True, timeout=120,
        )
        assert hog.returncode == -9, hog.stderr  # SIGKILL from the OOM killer
        stat = dict(line.split() for line in (pod_cg / "memory.stat").read_text().splitlines())
        assert int(stat["total_swap"]) == 0
        # The kernel counts the kill in the victim's own cgroup (the leaf), not the pod's.
        oom = dict(line.split() for line in (leaf / "memory.oom_control").read_text().splitlines())
        assert int(oom["oom_kill"]) >= 1
    finally:
        remove(rt, pod_id)


def test_swap_disabled_in_a_cgroup_the_kubelet_made(daemon: Daemon, rt) -> None:
    if not (MEMCG / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("needs cgroup v1 memory with swap accounting")
    cfg = pod_config()
    parent = f"{daemon.cgroup_parent}/kubelet/pod{cfg.metadata.uid}"
    # The kubelet's cgroupfs manager makes the v1 dirs (not the hybrid unified one).
    made = [h / parent.lstrip("/") for h in Path("/sys/fs/cgroup").iterdir()
            if h.name != "unified"]
    for d in made:
        d.mkdir(parents=True)
    cfg.linux.cgroup_parent = parent
    cfg.linux.resources.memory_limit_in_bytes = LIMIT
    try:
        pod_id = run(rt, cfg)
        pod_cg = MEMCG / parent.lstrip("/")
        assert int((pod_cg / "memory.memsw.limit_in_bytes").read_text()) == LIMIT
        assert int((pod_cg / "memory.swappiness").read_text()) == 0
        remove(rt, pod_id)
        assert pod_cg.is_dir(), "the kubelet's cgroup is the kubelet's to remove"
    finally:
        for d in made:
            d.rmdir()
            d.parent.rmdir()
        unified = Path("/sys/fs/cgroup/unified") / parent.lstrip("/")
        for d in (unified, unified.parent):
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()
