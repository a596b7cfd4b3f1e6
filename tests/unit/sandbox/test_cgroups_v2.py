from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import V2Layout, shares_to_weight
from sandbox.errors import CgroupError

POD = "/kubepods/burstable/pod1234"
GiB = 1 << 30


def _enabled(d: Path) -> set[str]:
    return set((d / "cgroup.subtree_control").read_text().split())


def test_detect_v2(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    layout = cgroups.detect(fake.root)
    assert isinstance(layout, V2Layout)
    assert layout.controllers == {"cpuset", "cpu", "io", "memory", "hugetlb", "pids"}
    assert cgroups.pod_cgroup_dirs(POD, root=fake.root) == [fake.root / POD[1:]]


def test_create_delegates_controllers_down_to_the_pod(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    assert cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake) is True
    # hugetlb too: the kubelet sends a limit for every page size, and runc fails the create
    # on one whose file the container's cgroup lacks.
    wanted = {"cpu", "cpuset", "hugetlb", "io", "memory", "pids"}
    for d in (
        fake.root,
        fake.root / "kubepods",
        fake.root / "kubepods/burstable",
        fake.root / POD[1:],
    ):
        assert _enabled(d) == wanted, d
    assert cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake) is False
    # Already enabled controllers are not written again.
    assert len(fake.values("cgroup.subtree_control")) == 4 * len(wanted)


def test_limit_and_swap_off(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    pod = fake.root / POD[1:]
    assert (pod / "memory.max").read_text() == str(GiB)
    assert (pod / "memory.swap.max").read_text() == "0"


def test_no_limit_still_disables_swap(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    pod = fake.root / POD[1:]
    assert (pod / "memory.max").read_text() == "max\n"
    assert (pod / "memory.swap.max").read_text() == "0"


def test_kernel_without_swap_accounting(cgroup_v2: Any) -> None:
    fake = cgroup_v2(swap=False)
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    pod = fake.root / POD[1:]
    assert (pod / "memory.max").read_text() == str(GiB)
    assert not (pod / "memory.swap.max").exists()


def test_only_available_controllers_are_enabled(cgroup_v2: Any) -> None:
    fake = cgroup_v2(controllers="memory pids")
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    assert _enabled(fake.root / POD[1:]) == {"memory", "pids"}


def test_limit_without_memory_controller_fails_and_rolls_back(cgroup_v2: Any) -> None:
    fake = cgroup_v2(controllers="cpu pids")
    with pytest.raises(CgroupError, match="memory controller"):
        cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    assert not (fake.root / "kubepods").exists()


def test_enable_failure_is_reported_and_rolled_back(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup("/kubepods", root=fake.root, fs=fake)
    # Simulate a level holding processes: the kernel refuses to delegate (EBUSY).
    (fake.root / "kubepods/cgroup.subtree_control").write_text("")
    fake.fail_on["cgroup.subtree_control"] = errno.EBUSY
    with pytest.raises(CgroupError, match="cannot enable"):
        cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    assert (fake.root / "kubepods").is_dir()
    assert not (fake.root / "kubepods/burstable").exists()


def test_cpu_weight_and_max(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(
        POD, cpu_shares=1024, cpu_quota=50000, cpu_period=100000, root=fake.root, fs=fake
    )
    pod = fake.root / POD[1:]
    assert (pod / "cpu.weight").read_text() == "100"
    assert (pod / "cpu.max").read_text() == "50000 100000"


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [(-1, 100000, "max 100000"), (None, 50000, "max 50000"), (25000, None, "25000")],
)
def test_cpu_max_forms(cgroup_v2: Any, quota: Any, period: Any, expected: str) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, cpu_quota=quota, cpu_period=period, root=fake.root, fs=fake)
    assert (fake.root / POD[1:] / "cpu.max").read_text() == expected


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (3, 2), (512, 59), (1024, 100), (2048, 174), (262144, 10000), (1 << 20, 10000)],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


def test_remove_nested_and_idempotent(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    ctr = fake.root / cgroups.container_cgroup_path(POD, "abc")[1:]
    fake.mkdir(ctr)
    fake.mkdir(ctr / "sub")
    assert (ctr / "memory.max").exists()  # the pod delegated memory to its children
    cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    assert not (fake.root / POD[1:]).exists()
    assert (fake.root / "kubepods/burstable").is_dir()
    cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)


def test_remove_refuses_with_processes(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    ctr = fake.root / cgroups.container_cgroup_path(POD, "abc")[1:]
    fake.mkdir(ctr)
    fake.put_pid(ctr, 999)
    with pytest.raises(CgroupError, match="999"):
        cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    assert ctr.is_dir()
    assert cgroups.list_pids(POD, root=fake.root, fs=fake) == [999]
    (ctr / "cgroup.procs").write_text("")
    cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    assert not (fake.root / POD[1:]).exists()


CONMON = "/pycri-conmon"


def test_a_process_cannot_join_a_cgroup_that_delegates_controllers(cgroup_v2: Any) -> None:
    # What the first RunPodSandbox met on a v2 node while the conmon cgroup was made like a
    # pod's: the kernel's "no internal processes" rule (played by the fake).
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(CONMON, root=fake.root, fs=fake)
    with pytest.raises(CgroupError, match=r"cannot move pid 421 into .*Device or resource busy"):
        cgroups.add_pid(CONMON, 421, root=fake.root, fs=fake)


@pytest.mark.parametrize("path", [CONMON, "/system.slice/pycri-conmon"])
def test_a_leaf_cgroup_takes_processes_and_accounts_them(cgroup_v2: Any, path: str) -> None:
    fake = cgroup_v2()
    assert cgroups.create_leaf_cgroup(path, root=fake.root, fs=fake) is True
    leaf = fake.root / path[1:]
    assert _enabled(leaf) == set()
    # Its parent delegates the controllers: conmon's memory and pids are still accounted.
    assert _enabled(leaf.parent) == {"cpu", "cpuset", "hugetlb", "io", "memory", "pids"}
    assert (leaf / "memory.current").exists() and (leaf / "pids.max").exists()
    cgroups.add_pid(path, 421, root=fake.root, fs=fake)
    cgroups.add_pid(path, 422, root=fake.root, fs=fake)
    assert cgroups.list_pids(path, root=fake.root, fs=fake) == [421, 422]
    # Made once and kept across daemon restarts, with its conmons inside.
    assert cgroups.create_leaf_cgroup(path, root=fake.root, fs=fake) is False


def test_an_older_pycri_conmon_cgroup_becomes_a_leaf(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(CONMON, root=fake.root, fs=fake)  # as pycri made it before
    assert _enabled(fake.root / CONMON[1:])
    assert cgroups.create_leaf_cgroup(CONMON, root=fake.root, fs=fake) is False
    assert _enabled(fake.root / CONMON[1:]) == set()
    cgroups.add_pid(CONMON, 421, root=fake.root, fs=fake)


def test_a_conmon_cgroup_with_children_using_its_controllers_is_refused(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(CONMON + "/child", root=fake.root, fs=fake)
    with pytest.raises(CgroupError, match=r"enables .*memory.* for its child cgroups \(child\)"):
        cgroups.create_leaf_cgroup(CONMON, root=fake.root, fs=fake)
    assert (fake.root / CONMON[1:] / "child").is_dir()  # not ours to remove


# --- a real cgroup2 mount: the hybrid host's controller-less one is enough for the tree ops ---

UNIFIED = Path("/sys/fs/cgroup/unified")


def _real_unified() -> bool:
    if os.geteuid() != 0 or not (UNIFIED / "cgroup.controllers").is_file():
        return False
    return isinstance(cgroups.detect(UNIFIED), V2Layout)


@pytest.mark.skipif(not _real_unified(), reason="needs root and a cgroup2 mount at " + str(UNIFIED))
def test_real_cgroup2_tree_lifecycle() -> None:
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod = f"{top}/pod{uuid.uuid4().hex[:12]}"
    ctr = cgroups.container_cgroup_path(pod, "c1")
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        assert cgroups.create_pod_cgroup(pod, root=UNIFIED) is True
        assert cgroups.create_leaf_cgroup(ctr, root=UNIFIED) is True
        sleeper = subprocess.Popen(["sleep", "300"])
        cgroups.add_pid(ctr, sleeper.pid, root=UNIFIED)
        assert f"0::{ctr}\n" in Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        with pytest.raises(CgroupError, match=str(sleeper.pid)):
            cgroups.remove_pod_cgroup(pod, root=UNIFIED)
        sleeper.kill()
        sleeper.wait()
        cgroups.remove_pod_cgroup(pod, root=UNIFIED)
        assert not (UNIFIED / pod[1:]).exists()
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for d in (UNIFIED / ctr[1:], UNIFIED / pod[1:], UNIFIED / top[1:]):
            if d.is_dir():
                d.rmdir()
    assert not (UNIFIED / top[1:]).exists()


def test_child_controllers_are_what_the_pod_enables_for_its_containers(cgroup_v2: Any) -> None:
    fake = cgroup_v2()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    assert cgroups.child_controllers(POD, root=fake.root, fs=fake) == {
        "cpu", "cpuset", "hugetlb", "io", "memory", "pids"}
    assert cgroups.child_controllers("/kubepods/gone", root=fake.root, fs=fake) == frozenset()
