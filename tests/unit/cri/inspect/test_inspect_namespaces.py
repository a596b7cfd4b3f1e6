from __future__ import annotations

import json
from pathlib import Path

from cri.inspect import namespaces, process
from tests.unit.cri.inspect.fakes import fake_process

HOST = {"net": 1, "ipc": 2, "uts": 3, "pid": 4, "mnt": 5, "cgroup": 6, "user": 7}
INFRA = {**HOST, "net": 11, "ipc": 12, "uts": 13, "pid": 14, "mnt": 15}


def test_namespaces_by_inode_and_none_for_a_gone_process(tmp_path: Path) -> None:
    fake_process(tmp_path, 42, INFRA)
    assert namespaces.read(42, tmp_path) == INFRA
    assert namespaces.read(43, tmp_path) is None


def test_a_type_the_kernel_lacks_is_left_out(tmp_path: Path) -> None:
    fake_process(tmp_path, 42, {"net": 11, "mnt": 15})
    assert namespaces.read(42, tmp_path) == {"net": 11, "mnt": 15}


def test_the_infra_owns_what_is_not_the_hosts() -> None:
    assert namespaces.infra_sharing(INFRA, HOST) == {
        "net": "pod", "ipc": "pod", "uts": "pod", "pid": "pod", "mnt": "pod",
        "cgroup": "host", "user": "host"}


def test_a_container_shares_joins_or_owns_each_namespace() -> None:
    own_pid = {**INFRA, "pid": 24, "mnt": 25}
    assert namespaces.sharing(own_pid, INFRA, HOST) == {
        "net": "shared", "ipc": "shared", "uts": "shared", "pid": "private",
        "mnt": "private", "cgroup": "host", "user": "host"}
    host_pid = {**INFRA, "pid": 4, "mnt": 25}
    assert namespaces.sharing(host_pid, INFRA, HOST)["pid"] == "host"


def test_with_the_infra_gone_only_host_and_private_are_known() -> None:
    assert namespaces.sharing({"net": 11, "user": 7}, None, HOST) == {
        "net": "private", "user": "host"}


def test_a_host_network_pod_is_on_the_host_not_merely_shared() -> None:
    infra = {**INFRA, "net": 1}
    assert namespaces.sharing({"net": 1}, infra, HOST) == {"net": "host"}


def running(tmp_path: Path, pid: int = 42) -> bool:
    return process.running("c1", pid, exits_dir=tmp_path / "exits",
                           runtime_root=tmp_path / "runc", proc=tmp_path / "proc")


def test_a_running_init_is_the_one_runc_started(tmp_path: Path) -> None:
    fake_process(tmp_path / "proc", 42, INFRA, start=777)
    (tmp_path / "runc" / "c1").mkdir(parents=True)
    state = tmp_path / "runc" / "c1" / "state.json"
    state.write_text(json.dumps({"init_process_pid": 42, "init_process_start": 777}))
    assert running(tmp_path)
    # The pid was reused by another process since (a different start time).
    state.write_text(json.dumps({"init_process_pid": 42, "init_process_start": 600}))
    assert not running(tmp_path)


def test_exited_zombie_or_never_started_is_not_running(tmp_path: Path) -> None:
    fake_process(tmp_path / "proc", 42, INFRA)
    assert running(tmp_path)  # no runc state to compare with: the pid must do
    assert not running(tmp_path, 0)
    assert not running(tmp_path, 43)
    (tmp_path / "exits").mkdir()
    (tmp_path / "exits" / "c1").write_text("0")
    assert not running(tmp_path)
    fake_process(tmp_path / "proc", 50, INFRA, state="Z")
    assert process.start_time(50, tmp_path / "proc") is None
    assert process.start_time(42, tmp_path / "proc") == 1000
