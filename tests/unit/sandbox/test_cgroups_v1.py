from __future__ import annotations

import errno
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import V1Layout
from sandbox.errors import CgroupError

POD = "/kubepods/burstable/pod1234"
GiB = 1 << 30


def _dirs(root: Path, path: str) -> list[Path]:
    return cgroups.pod_cgroup_dirs(path, root=root)


# --- detect -----------------------------------------------------------------------------


def test_detect_separate_cpu_and_cpuacct_and_hybrid_unified(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    layout = cgroups.detect(fake.root)
    assert isinstance(layout, V1Layout)
    assert layout.dir_of("cpu") == fake.root / "cpu"
    assert layout.dir_of("cpuacct") == fake.root / "cpuacct"
    assert layout.dir_of("memory") == fake.root / "memory"
    assert layout.dir_of("systemd") == fake.root / "systemd"
    assert layout.dir_of("hugetlb") is None
    assert layout.unified == fake.root / "unified"
    assert len(layout.hierarchies) == 10


def test_detect_combined_cpu_cpuacct_counts_it_once(cgroup_v1: Any) -> None:
    fake = cgroup_v1(combined=True, hybrid=False)
    layout = cgroups.detect(fake.root)
    assert isinstance(layout, V1Layout)
    combined = fake.root / "cpu,cpuacct"
    assert layout.dir_of("cpu") == layout.dir_of("cpuacct") == combined
    assert [h.path for h in layout.hierarchies].count(combined) == 1
    assert layout.unified is None
    assert len(layout.hierarchies) == 8


def test_detect_rejects_a_tree_without_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "stray").mkdir()
    with pytest.raises(CgroupError):
        cgroups.detect(tmp_path)
    with pytest.raises(CgroupError):
        cgroups.detect(tmp_path / "missing")


# --- create -----------------------------------------------------------------------------


@pytest.mark.parametrize("combined", [False, True])
def test_create_makes_the_pod_in_every_hierarchy(cgroup_v1: Any, combined: bool) -> None:
    fake = cgroup_v1(combined=combined)
    assert cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake) is True
    for d in _dirs(fake.root, POD):
        assert d.is_dir(), d
    assert (fake.root / "unified" / "kubepods/burstable/pod1234").is_dir()
    assert cgroups.pod_cgroup_exists(POD, root=fake.root)
    # A second call finds it made: not ours to claim.
    assert cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake) is False


def test_limit_sets_memsw_equal_and_swappiness_zero(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    pod = fake.root / "memory/kubepods/burstable/pod1234"
    assert (pod / "memory.limit_in_bytes").read_text() == str(GiB)
    assert (pod / "memory.memsw.limit_in_bytes").read_text() == str(GiB)
    assert (pod / "memory.swappiness").read_text() == "0"
    # From unlimited the limit shrinks, so it goes first (the fake enforces memsw >= limit).
    names = [Path(p).name for p, _ in fake.writes if "memory." in p]
    assert names == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.swappiness"]


@pytest.mark.parametrize(("first", "second"), [(GiB, 2 * GiB), (2 * GiB, GiB), (GiB, GiB)])
def test_limit_changes_write_in_an_order_the_kernel_accepts(
    cgroup_v1: Any, first: int, second: int
) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, first, root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(POD, second, root=fake.root, fs=fake)
    pod = fake.root / "memory/kubepods/burstable/pod1234"
    assert (pod / "memory.limit_in_bytes").read_text() == str(second)
    assert (pod / "memory.memsw.limit_in_bytes").read_text() == str(second)


def test_no_limit_still_disables_swap(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    pod = fake.root / "memory/kubepods/burstable/pod1234"
    assert (pod / "memory.swappiness").read_text() == "0"
    assert fake.values("memory.limit_in_bytes") == []
    assert fake.values("memory.memsw.limit_in_bytes") == []


def test_without_swap_accounting_only_limit_and_swappiness(cgroup_v1: Any) -> None:
    fake = cgroup_v1(swap=False)
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    pod = fake.root / "memory/kubepods/burstable/pod1234"
    assert (pod / "memory.limit_in_bytes").read_text() == str(GiB)
    assert not (pod / "memory.memsw.limit_in_bytes").exists()
    assert (pod / "memory.swappiness").read_text() == "0"


def test_cpuset_is_copied_down_from_the_nearest_ancestor(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cpuset = fake.root / "cpuset"
    cgroups.create_pod_cgroup("/kubepods", root=fake.root, fs=fake)
    # An ancestor with a narrower set of its own: below it, that set is inherited.
    (cpuset / "kubepods/cpuset.cpus").write_text("1-2\n")
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    assert (cpuset / "kubepods/burstable/cpuset.cpus").read_text() == "1-2"
    assert (cpuset / "kubepods/burstable/pod1234/cpuset.cpus").read_text() == "1-2"
    assert (cpuset / "kubepods/burstable/pod1234/cpuset.mems").read_text() == "0"
    assert (cpuset / "kubepods/cpuset.mems").read_text() == "0"


def test_cpu_settings(cgroup_v1: Any) -> None:
    fake = cgroup_v1(combined=True)
    cgroups.create_pod_cgroup(
        POD, cpu_shares=512, cpu_quota=50000, cpu_period=100000, root=fake.root, fs=fake
    )
    pod = fake.root / "cpu,cpuacct/kubepods/burstable/pod1234"
    assert (pod / "cpu.shares").read_text() == "512"
    assert (pod / "cpu.cfs_quota_us").read_text() == "50000"
    assert (pod / "cpu.cfs_period_us").read_text() == "100000"


def test_cpu_period_rejected_first_is_retried_after_quota(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    fake.fail_on["cpu.cfs_period_us"] = errno.EINVAL
    cgroups.create_pod_cgroup(POD, cpu_quota=20000, cpu_period=50000, root=fake.root, fs=fake)
    pod = fake.root / "cpu/kubepods/burstable/pod1234"
    assert (pod / "cpu.cfs_period_us").read_text() == "50000"
    assert [Path(p).name for p, _ in fake.writes if "cfs" in p] == [
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_limit": 0},
        {"memory_limit": -5},
        {"cpu_shares": 1},
        {"cpu_period": 10},
        {"cpu_quota": 5},
        {"memory_limit": True},
    ],
)
def test_bad_resources_are_refused_before_anything_is_made(cgroup_v1: Any, kwargs: Any) -> None:
    fake = cgroup_v1()
    with pytest.raises(CgroupError):
        cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake, **kwargs)
    assert not (fake.root / "memory/kubepods").exists()


def test_failure_removes_only_what_this_call_made(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup("/kubepods", root=fake.root, fs=fake)
    fake.fail_on["memory.swappiness"] = errno.EIO
    with pytest.raises(CgroupError, match="pod1234"):
        cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    for h in ("memory", "cpu", "unified"):
        assert (fake.root / h / "kubepods").is_dir()
        assert not (fake.root / h / "kubepods/burstable").exists()


def test_half_made_pod_is_not_reported_as_existing(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    fake.mkdir(fake.root / "memory/pycri")
    fake.mkdir(fake.root / "memory/pycri/podx")
    assert not cgroups.pod_cgroup_exists("/pycri/podx", root=fake.root)
    assert cgroups.create_pod_cgroup("/pycri/podx", root=fake.root, fs=fake) is True


@pytest.mark.parametrize(
    "path",
    [
        "kubepods.slice:pycri",
        "kubepods--x.slice",
        "relative/pod",
        "/",
        "",
        "/a/../b",
        "/..",
        "/a//b",
        "/a/",
        "/a/./b",
        "/a:b:c",
        "/a/b\n",
        "/.hidden",
    ],
)
def test_malformed_paths_are_refused(cgroup_v1: Any, path: str) -> None:
    fake = cgroup_v1()
    with pytest.raises(CgroupError):
        cgroups.create_pod_cgroup(path, root=fake.root, fs=fake)
    with pytest.raises(CgroupError):
        cgroups.remove_pod_cgroup(path, root=fake.root, fs=fake)


# --- remove, pids, paths ----------------------------------------------------------------


def test_remove_takes_children_depth_first_and_is_idempotent(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, GiB, root=fake.root, fs=fake)
    ctr = cgroups.container_cgroup_path(POD, "abc")
    for d in _dirs(fake.root, ctr):  # what runc would make
        fake.mkdir(d)
        fake.mkdir(d / "nested")
    cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    for d in _dirs(fake.root, POD):
        assert not d.exists()
        assert d.parent.is_dir()  # ancestors stay: other pods use them
    cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    cgroups.remove_pod_cgroup("/never/made", root=fake.root, fs=fake)


def test_remove_refuses_while_processes_are_inside(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    ctr = _dirs(fake.root, cgroups.container_cgroup_path(POD, "abc"))
    for d in ctr:
        fake.mkdir(d)
    fake.put_pid(ctr[0], 4242)
    fake.put_pid(fake.root / "pids/kubepods/burstable/pod1234", 4243)
    with pytest.raises(CgroupError, match=r"4242 .*4243"):
        cgroups.remove_pod_cgroup(POD, root=fake.root, fs=fake)
    assert all(d.is_dir() for d in ctr)
    assert cgroups.list_pids(POD, root=fake.root, fs=fake) == [4242, 4243]
    assert cgroups.list_pids(POD, root=fake.root, fs=fake, recursive=False) == [4243]


def test_a_leaf_cgroup_is_made_in_every_hierarchy(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    assert cgroups.create_leaf_cgroup("/pycri-conmon", root=fake.root, fs=fake) is True
    cgroups.add_pid("/pycri-conmon", 77, root=fake.root, fs=fake)
    assert cgroups.list_pids("/pycri-conmon", root=fake.root, fs=fake) == [77]
    dirs = cgroups.pod_cgroup_dirs("/pycri-conmon", root=fake.root)
    assert dirs and all((d / "cgroup.procs").read_text().split() == ["77"] for d in dirs)


def test_add_pid_writes_every_hierarchy(cgroup_v1: Any) -> None:
    fake = cgroup_v1()
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    cgroups.add_pid(POD, 77, root=fake.root, fs=fake)
    assert fake.values("cgroup.procs") == ["77"] * 10
    with pytest.raises(CgroupError):
        cgroups.add_pid("/not/there", 77, root=fake.root, fs=fake)


def test_container_cgroup_path() -> None:
    assert cgroups.container_cgroup_path(POD, "abc") == f"{POD}/pycri-abc"
    assert cgroups.container_cgroup_path("/p", "x", prefix="pycri-conmon") == "/p/pycri-conmon-x"
    for pod, cid in [("/p", "../x"), ("/p", "a/b"), ("p", "x"), ("/p/../q", "x"), ("/p", "")]:
        with pytest.raises(CgroupError):
            cgroups.container_cgroup_path(pod, cid)


# --- the real thing -----------------------------------------------------------------------

REAL = Path("/sys/fs/cgroup")


def _real_v1() -> V1Layout | None:
    if os.geteuid() != 0:
        return None
    try:
        layout = cgroups.detect(REAL)
    except CgroupError:
        return None
    if not isinstance(layout, V1Layout) or layout.dir_of("memory") is None:
        return None
    return layout


@pytest.mark.skipif(_real_v1() is None, reason="needs root on a cgroup v1 host")
def test_real_v1_pod_cgroup_lifecycle() -> None:
    layout = _real_v1()
    assert layout is not None
    top = f"/pycri-test-{uuid.uuid4().hex[:12]}"
    pod = f"{top}/pod{uuid.uuid4().hex[:12]}"
    limit = 64 << 20  # page aligned: the kernel rounds to pages
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        assert cgroups.create_pod_cgroup(pod, limit, cpu_shares=256, root=REAL) is True
        mem = REAL / "memory" / pod.lstrip("/")
        assert int((mem / "memory.limit_in_bytes").read_text()) == limit
        if (mem / "memory.memsw.limit_in_bytes").exists():
            assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == limit
        assert int((mem / "memory.swappiness").read_text()) == 0

        sleeper = subprocess.Popen(["sleep", "300"])
        cgroups.add_pid(pod, sleeper.pid, root=REAL)
        cgroup_file = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        assert f"memory:{pod}\n" in cgroup_file
        assert cgroups.list_pids(pod, root=REAL) == [sleeper.pid]
        with pytest.raises(CgroupError, match=rf"{sleeper.pid} \(sleep\)"):
            cgroups.remove_pod_cgroup(pod, root=REAL)
        assert all(d.is_dir() for d in cgroups.pod_cgroup_dirs(pod, root=REAL))

        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
        cgroups.remove_pod_cgroup(pod, root=REAL)
        for h in layout.hierarchies:
            assert not (h.path / pod.lstrip("/")).exists(), h.path
            assert (h.path / top.lstrip("/")).is_dir()  # ancestors are left alone
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for h in layout.hierarchies:
            for d in (h.path / pod.lstrip("/"), h.path / top.lstrip("/")):
                if d.is_dir():
                    d.rmdir()
    for h in layout.hierarchies:
        assert not (h.path / top.lstrip("/")).exists()
