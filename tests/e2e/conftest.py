"""e2e fixtures: one real pycri daemon per session (see helpers.Daemon)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.api import api_pb2_grpc
from sandbox import cgroups
from tests.e2e.containers import Pod, pods, pull, remove_all_images, start_registry
from tests.e2e.helpers import Daemon, close_connections, need_root
from tests.fixtures.registry import LocalRegistry


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_root()
    netns_before = pod_netns()
    d = Daemon.new()
    d.start()
    try:
        yield d
        # Every test removes its pods: the whole session must leave nothing behind.
        left = session_leftovers(d)
        if pod_netns() - netns_before:
            left.append(f"network namespaces {sorted(pod_netns() - netns_before)}")
        assert not left, f"leaked after the e2e session: {left}"
    finally:
        d.cleanup()


@pytest.fixture(autouse=True)
def _close_streaming_connections() -> Iterator[None]:
    yield
    close_connections()


def pod_netns() -> set[str]:
    """The pod network namespaces pinned on the node (pycri names them pycri-<pod id prefix>)."""
    pinned = Path("/var/run/netns")
    return {p.name for p in pinned.glob("pycri-*")} if pinned.is_dir() else set()


def session_leftovers(d: Daemon) -> list[str]:
    left = []
    for parent in cgroups.pod_cgroup_dirs(d.cgroup_parent):
        if parent.is_dir() and any(p.is_dir() for p in parent.iterdir()):
            left.append(f"pod cgroups under {parent}")
    if d.conmon_cgroup.startswith("/"):  # with systemd, conmon scopes are in the pod slices
        for monitors in cgroups.pod_cgroup_dirs(d.conmon_cgroup):
            procs = monitors / "cgroup.procs"
            if procs.is_file() and procs.read_text().strip():
                left.append(f"processes in the conmon cgroup {monitors}")
    if str(d.base) in Path("/proc/self/mountinfo").read_text():
        left.append("mounts under the test dir")
    veths = subprocess.run(["ip", "-o", "link", "show", "master", d.bridge],
                           capture_output=True, text=True).stdout
    if veths.strip():
        left.append("veths on the bridge")
    leases = [p for p in d.ipam_dir.rglob("*") if p.is_file() and p.name[0].isdigit()]
    if leases:
        left.append(f"IP leases {leases}")
    pods = list((d.root / "sandboxes").glob("*")) if (d.root / "sandboxes").exists() else []
    if pods:
        left.append(f"pod state {pods}")
    ctrs = list((d.root / "containers").glob("*")) if (d.root / "containers").exists() else []
    if ctrs:
        left.append(f"container state {ctrs}")
    conmons = subprocess.run(["pgrep", "-f", f"conmon.*{d.base}"], capture_output=True,
                             text=True).stdout.split()
    if conmons:
        left.append(f"conmon processes {conmons}")
    return left


@pytest.fixture(scope="module")
def registry(daemon: Daemon) -> Iterator[LocalRegistry]:
    """A local registry with a runnable busybox (tests/e2e/containers.py), one per module; the
    images the module pulled are removed afterwards, so each module starts with an empty store."""
    reg, _ = start_registry(daemon)
    try:
        yield reg
    finally:
        reg.stop()
        remove_all_images(daemon)


@pytest.fixture(scope="module")
def image(daemon: Daemon, registry: LocalRegistry) -> str:
    return pull(daemon)


@pytest.fixture
def pod(daemon: Daemon, image: str, tmp_path: Path) -> Iterator[Pod]:
    yield from pods(daemon, tmp_path)


@pytest.fixture
def rt(daemon: Daemon) -> api_pb2_grpc.RuntimeServiceStub:
    if daemon.proc is None or daemon.proc.poll() is not None:
        daemon.start()
    return daemon.runtime()
