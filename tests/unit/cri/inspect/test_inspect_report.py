"""report.build and render over fake trees: a pod with a running and an exited container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cri.inspect import render, report
from cri.inspect.state import load_containers, load_pods, resolve
from tests.unit.cri.inspect.fakes import fake_process, write_container, write_files, write_pod

POD = "a1" * 32
APP = "b2" * 32
DONE = "c3" * 32
HOST = {"net": 1, "ipc": 2, "uts": 3, "pid": 4, "mnt": 5, "cgroup": 6, "user": 7}
INFRA = {**HOST, "net": 11, "ipc": 12, "uts": 13, "pid": 14, "mnt": 15}
APPNS = {**INFRA, "pid": 24, "mnt": 25}


@pytest.fixture
def paths(tmp_path: Path) -> report.Paths:
    root, proc, cg = tmp_path / "root", tmp_path / "proc", tmp_path / "cg"
    write_pod(root, POD, name="web", namespace="shop", pid=100,
              netns=str(tmp_path / "netns-gone"))
    write_container(root, APP, POD, name="app", pid=200)
    write_container(root, DONE, POD, name="done", pid=300)
    fake_process(proc, "self", HOST)
    fake_process(proc, 100, INFRA, cgroup=f"0::/pods/pycri-{POD}\n")
    fake_process(proc, 200, APPNS, cgroup=f"0::/pods/pycri-{APP}\n")
    write_files(cg, {"cgroup.controllers": "cpu memory pids"})
    write_files(cg / "pods" / f"pycri-{POD}", {"memory.max": "max", "cpu.max": "max 100000",
                                              "cpu.weight": "1", "pids.max": "max"})
    write_files(cg / "pods" / f"pycri-{APP}", {
        "memory.max": str(64 << 20), "memory.swap.max": "0", "cpu.max": "50000 100000",
        "cpu.weight": "20", "pids.max": "100"})
    return report.Paths(exits_dir=tmp_path / "exits", runtime_roots={},
                        runroot=tmp_path / "run", proc=proc, cgroup_root=cg)


def build(paths: report.Paths, query: str) -> dict[str, Any]:
    root = paths.proc.parent / "root"
    return report.build(resolve(query, load_pods(root), load_containers(root)), paths)


def test_a_pod_report(paths: report.Paths) -> None:
    data = build(paths, "shop/web")
    assert data["kind"] == "pod"
    assert data["pod"]["ips"] == ["10.0.0.5"] and data["pod"]["interfaces"] is None
    assert "cannot read the pod's network namespace" in data["pod"]["network_error"]
    infra, app, done = data["processes"]
    assert (infra["role"], infra["pid"], infra["running"]) == ("infra", 100, True)
    assert infra["namespaces"]["net"] == {"inode": 11, "sharing": "pod"}
    assert infra["namespaces"]["user"] == {"inode": 7, "sharing": "host"}
    assert app["namespaces"]["net"] == {"inode": 11, "sharing": "shared"}
    assert app["namespaces"]["pid"] == {"inode": 24, "sharing": "private"}
    assert app["cgroup"]["limits"]["memory"] == 64 << 20
    assert app["pid_namespace_mode"] == "container"
    # pid 300 is gone: not running, nothing to read, same keys.
    assert (done["running"], done["namespaces"], done["cgroup"]) == (False, None, None)
    assert set(done) == set(app)


def test_a_container_report_has_its_pods_infra_and_only_it(paths: report.Paths) -> None:
    data = build(paths, APP[:6])
    assert data["kind"] == "container"
    assert [p["name"] for p in data["processes"]] == ["POD", "app"]


def test_an_exit_file_means_exited_even_with_the_pid_alive(paths: report.Paths) -> None:
    paths.exits_dir.mkdir()
    (paths.exits_dir / APP).write_text("137")
    assert build(paths, APP)["processes"][1]["running"] is False


def test_human_output_is_aligned_tables(paths: report.Paths) -> None:
    text = render.human(build(paths, POD))
    lines = text.splitlines()
    assert lines[0] == f"pod        shop/web {POD} (ready)"
    header = next(line for line in lines if line.startswith("PROCESS") and "NET" in line)
    infra_row = next(line for line in lines if line.startswith("infra") and "running" in line)
    app_row = next(line for line in lines if line.startswith("app") and "running" in line)
    done_row = next(line for line in lines if line.startswith("done") and "running" in line)
    # Every column starts where its header does.
    for col in ("PID", "STATE", "NET", "PID ", "MNT", "USER"):
        at = header.index(col, header.index("STATE") if col == "PID " else 0)
        for row in (infra_row, app_row, done_row):
            assert row[at - 2:at] == "  " and row[at] != " ", (col, row)
    assert app_row.split()[3:] == ["running", "shared", "shared", "shared", "24", "25", "host",
                                   "host"]
    assert done_row.split()[3:] == ["not", "running", "-", "-", "-", "-", "-", "-", "-"]
    limits_row = [line for line in lines if line.startswith("app ")][1]
    assert limits_row.split()[2:] == ["64Mi", "0", "50000/100000", "20", "100",
                                      f"/pods/pycri-{APP}"]
    assert "CPU WEIGHT" in text and "CPU SHARES" not in text


def test_a_limit_an_ancestor_holds_lower_is_shown_starred(paths: report.Paths) -> None:
    write_files(paths.cgroup_root / "pods", {"memory.max": str(32 << 20), "pids.max": "10"})
    data = build(paths, APP)
    app = data["processes"][1]["cgroup"]
    assert app["limits"]["memory"] == 64 << 20 and app["effective"]["memory"] == 32 << 20
    row = [line for line in render.human(data).splitlines() if line.startswith("app ")][1]
    assert row.split()[2:7] == ["32Mi*", "0", "50000/100000", "20", "10*"]


def test_json_is_the_report(paths: report.Paths) -> None:
    data = build(paths, POD)
    assert json.loads(render.to_json(data)) == data


def test_sizes_in_the_largest_exact_binary_unit() -> None:
    assert [render.size(v) for v in (64 << 20, 3 << 30, 1000, 1536, 0, "max", None)] == [
        "64Mi", "3Gi", "1000", "1536", "0", "max", "-"]


def test_a_created_containers_waiting_init_is_shown_created(paths: report.Paths) -> None:
    root = paths.proc.parent / "root"
    write_container(root, "e5" * 32, POD, name="waiting", pid=500, state="created")
    fake_process(paths.proc, 500, APPNS)
    data = build(paths, "e5")
    assert data["processes"][1]["running"] is True
    row = next(line for line in render.human(data).splitlines() if line.startswith("waiting"))
    assert row.split()[3] == "created"
