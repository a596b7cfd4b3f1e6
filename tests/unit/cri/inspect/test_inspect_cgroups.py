from __future__ import annotations

from pathlib import Path

from cri.inspect.cgroup_limits import KEYS, limits_of, parse_proc_cgroup, read
from tests.unit.cri.inspect.fakes import fake_process, write_files

V1_UNLIMITED = "9223372036854771712"
CTR = "/kubepods/pod1/pycri-c1"
SYSTEMD_CTR = "/kubepods.slice/kubepods-pod1.slice/pycri-c1.scope"
HYBRID = f"""12:pids:{CTR}
11:cpu,cpuacct:{CTR}
10:memory:{CTR}
1:name=systemd:/user.slice
0::{CTR}
"""


def test_proc_cgroup_v1_hybrid_and_v2() -> None:
    assert parse_proc_cgroup(HYBRID) == {
        "pids": CTR, "cpu": CTR, "cpuacct": CTR, "memory": CTR, "name=systemd": "/user.slice",
        "": CTR}
    assert parse_proc_cgroup(f"0::{SYSTEMD_CTR}\n") == {"": SYSTEMD_CTR}
    assert parse_proc_cgroup("garbage\n") == {}


def v2_tree(root: Path, path: str, files: dict[str, str]) -> None:
    write_files(root, {"cgroup.controllers": "cpu memory pids"})
    write_files(root / path.lstrip("/"), files)


def test_v2_limits_from_one_directory_with_the_systemd_driver(tmp_path: Path) -> None:
    v2_tree(tmp_path, SYSTEMD_CTR, {"memory.max": str(64 << 20), "memory.swap.max": "0",
                                    "cpu.max": "50000 100000", "cpu.weight": "20",
                                    "pids.max": "100"})
    info = limits_of({"": SYSTEMD_CTR}, root=tmp_path)
    assert (info.version, info.path, info.paths) == (2, SYSTEMD_CTR, {})
    assert info.limits == {"memory": 64 << 20, "swap": 0, "cpu_quota": 50000,
                           "cpu_period": 100000, "cpu_weight": 20, "cpu_shares": None,
                           "pids": 100}


def test_v2_unlimited_is_max_and_missing_files_are_none(tmp_path: Path) -> None:
    # No swap accounting (no memory.swap.max), no pids controller.
    v2_tree(tmp_path, CTR, {"memory.max": "max", "cpu.max": "max 100000", "cpu.weight": "100"})
    lim = limits_of({"": CTR}, root=tmp_path).limits
    assert lim == {"memory": "max", "swap": None, "cpu_quota": "max", "cpu_period": 100000,
                   "cpu_weight": 100, "cpu_shares": None, "pids": None}


def v1_tree(root: Path, files: dict[str, dict[str, str]]) -> None:
    for hierarchy in ("memory", "cpu,cpuacct", "pids", "systemd"):
        write_files(root / hierarchy, {"cgroup.procs": ""})
    write_files(root / "unified", {"cgroup.procs": "", "cgroup.controllers": ""})
    for hierarchy, values in files.items():
        write_files(root / hierarchy / CTR.lstrip("/"), values)


def test_v1_limits_from_each_controllers_hierarchy(tmp_path: Path) -> None:
    v1_tree(tmp_path, {
        "memory": {"memory.limit_in_bytes": str(64 << 20),
                   "memory.memsw.limit_in_bytes": str(96 << 20)},
        "cpu,cpuacct": {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000",
                        "cpu.shares": "512"},
        "pids": {"pids.max": "max"},
    })
    info = limits_of(parse_proc_cgroup(HYBRID), root=tmp_path)
    assert (info.version, info.path) == (1, CTR)
    assert info.paths == {"memory": CTR, "cpu": CTR, "pids": CTR}
    # v1's memsw counts memory and swap together: the swap is what it allows beyond memory.
    assert info.limits == {"memory": 64 << 20, "swap": 32 << 20, "cpu_quota": 50000,
                           "cpu_period": 100000, "cpu_weight": None, "cpu_shares": 512,
                           "pids": "max"}


def test_v1_unlimited_is_max_and_absent_controllers_none(tmp_path: Path) -> None:
    v1_tree(tmp_path, {
        "memory": {"memory.limit_in_bytes": V1_UNLIMITED,
                   "memory.memsw.limit_in_bytes": V1_UNLIMITED},
        "cpu,cpuacct": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000",
                        "cpu.shares": "1024"},
    })
    # The process is in no pids hierarchy (a kernel without it): no pids line.
    paths = parse_proc_cgroup(f"11:cpu,cpuacct:{CTR}\n10:memory:{CTR}\n")
    lim = limits_of(paths, root=tmp_path).limits
    assert lim == {"memory": "max", "swap": "max", "cpu_quota": "max", "cpu_period": 100000,
                   "cpu_weight": None, "cpu_shares": 1024, "pids": None}


def test_a_gone_process_or_cgroup_has_no_limits(tmp_path: Path) -> None:
    v2_tree(tmp_path / "cg", "/", {})
    assert read(42, root=tmp_path / "cg", proc=tmp_path / "proc") is None
    fake_process(tmp_path / "proc", 42, {}, cgroup="0::/removed\n")
    info = read(42, root=tmp_path / "cg", proc=tmp_path / "proc")
    assert info is not None and info.limits == dict.fromkeys(KEYS)


def test_effective_limits_are_the_tightest_of_the_cgroup_and_its_ancestors_v2(
        tmp_path: Path) -> None:
    v2_tree(tmp_path, "/kubepods", {"memory.max": str(8 << 30), "pids.max": "max",
                                    "cpu.max": "max 100000"})
    v2_tree(tmp_path, "/kubepods/pod1", {"memory.max": str(128 << 20), "pids.max": "50",
                                         "cpu.max": "20000 50000", "memory.swap.max": "0"})
    v2_tree(tmp_path, CTR, {"memory.max": "max", "pids.max": "max", "cpu.max": "50000 100000",
                            "memory.swap.max": "max"})
    info = limits_of({"": CTR}, root=tmp_path)
    assert (info.limits["memory"], info.limits["pids"]) == ("max", "max")
    # 20000/50000 (0.4 CPU) is tighter than 50000/100000 (0.5).
    assert info.effective == {"memory": 128 << 20, "swap": 0, "cpu_quota": 20000,
                              "cpu_period": 50000, "pids": 50}


def test_effective_limits_v1_walk_each_hierarchy(tmp_path: Path) -> None:
    v1_tree(tmp_path, {"memory": {"memory.limit_in_bytes": V1_UNLIMITED},
                       "cpu,cpuacct": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
                       "pids": {"pids.max": "max"}})
    write_files(tmp_path / "memory" / "kubepods" / "pod1",
                {"memory.limit_in_bytes": str(1 << 30),
                 "memory.memsw.limit_in_bytes": str(1 << 30)})
    info = limits_of(parse_proc_cgroup(HYBRID), root=tmp_path)
    assert info.limits["memory"] == "max"
    assert info.effective == {"memory": 1 << 30, "swap": 0, "cpu_quota": "max",
                              "cpu_period": 100000, "pids": "max"}
