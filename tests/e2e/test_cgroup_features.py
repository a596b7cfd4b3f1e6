"""What the kubelet sends whether or not the node can apply it: a zero hugetlb limit for every
page size under /sys/kernel/mm/hugepages. Where no cgroup hierarchy runc uses carries hugetlb
(this cgroup-v1 host: only its cgroup2 mount has it) runc failed every create with "cannot set
hugetlb limit"; now the limits are left out, and the daemon said so once at start-up. In the node
guest (cgroup v2, both drivers) hugetlb reaches containers and the limits are applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cri.api import api_pb2
from sandbox import cgroups
from sandbox.cgroups import V1Layout
from tests.e2e.containers import Pod
from tests.e2e.helpers import Daemon, hugepage_sizes

pytestmark = pytest.mark.node

START_LINE = "not available to container cgroups on this host: "


def hugetlb_reaches_containers() -> bool:
    """The host's own word, not pycri's: on v2 whether the root offers hugetlb, on v1 whether a
    hierarchy carries it (/proc/cgroups: hierarchy 0 is none; a hybrid host's cgroup2 mount
    does not count, runc's v1 manager sets no limit there)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        return "hugetlb" in v2.read_text().split()
    for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
        name, hierarchy, _, enabled = line.split()
        if name == "hugetlb":
            return hierarchy != "0" and enabled == "1"
    return False


def unavailable(daemon: Daemon) -> list[str] | None:
    """What the daemon's start-up line named, None without such a line."""
    for line in daemon.log.read_text(errors="replace").splitlines():
        if START_LINE in line:
            names = line.split(START_LINE, 1)[1].split("; ")[0]
            return [n.split(" (")[0] for n in names.split(", ")]
    return None


def hugetlb_limit(ctr_cgroup: str, size: str) -> str:
    layout = cgroups.detect()
    if isinstance(layout, V1Layout):
        top = layout.dir_of("hugetlb")
        assert top is not None
        return (top / ctr_cgroup.lstrip("/") / f"hugetlb.{size}.limit_in_bytes").read_text().strip()
    [d] = cgroups.pod_cgroup_dirs(ctr_cgroup)
    return (d / f"hugetlb.{size}.max").read_text().strip()


def test_hugepage_limits_for_every_page_size_do_not_stop_a_container(daemon: Daemon,
                                                                     pod: Pod) -> None:
    sizes = hugepage_sizes()
    if not sizes:
        pytest.skip("the kernel lists no huge page sizes: the kubelet would send none")
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
    for size in sizes:
        res.hugepage_limits.add(page_size=size, limit=0)
    ctr = pod.run("huge", ["sleep", "1000"], resources=res)
    assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING
    # The kubelet sends the same limits again when it resizes a container.
    res.memory_limit_in_bytes = 96 << 20
    pod.rt.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
        container_id=ctr, linux=res), timeout=60)
    assert pod.exec(ctr, ["echo", "alive"]).stdout == b"alive\n"

    info = json.loads(pod.status(ctr, verbose=True).info["info"])
    spec_limits = info["runtimeSpec"]["linux"]["resources"].get("hugepageLimits")
    said = unavailable(daemon)
    if hugetlb_reaches_containers():
        assert said is None or "hugetlb" not in said, said
        assert spec_limits == [{"pageSize": s, "limit": 0} for s in sizes]
        for size in sizes:
            assert hugetlb_limit(info["cgroupsPath"], size) == "0"
    else:
        assert said is not None and "hugetlb" in said, daemon.log_tail()
        assert spec_limits is None
