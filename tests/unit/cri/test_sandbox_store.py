"""Durable sandbox state: committed pods come back; a creation cut short is handed back for
teardown instead of being indexed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cri.api import api_pb2
from cri.errors import FailedPrecondition
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus, SandboxStore


def make(ident: str) -> Sandbox:
    meta = SandboxMeta(id=ident, name=f"k8s_POD_{ident}_ns_uid_0", runtime_handler="",
                       created_at=123, run_dir=f"/run/x/{ident}", netns_path=f"/var/run/netns/{ident}",
                       cgroup_parent="/pycri/poduid", cgroup_created=True, hostname="h",
                       shm_path="", infra_id=ident)
    config = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(name=ident, uid="u"))
    return Sandbox(meta, config, SandboxStatus(SandboxState.READY, pid=42, ips=["10.0.0.2"]))


def test_committed_and_unfinished_pods_after_restart(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path)
    done, half = make("aaa1"), make("bbb2")
    store.begin(done)
    store.commit(done)
    store.begin(half)  # the daemon died before commit
    assert {p.id for p in store} == {"aaa1"}
    assert stat.S_IMODE(os.stat(tmp_path / "sandboxes" / "aaa1").st_mode) == 0o700

    again = SandboxStore(tmp_path)
    loaded, unfinished = again.load()
    assert [p.id for p in loaded] == ["aaa1"]
    assert loaded[0].meta == done.meta and loaded[0].status == done.status
    assert loaded[0].config == done.config
    assert [p.meta for p in unfinished] == [half.meta]
    assert again.names.owner(done.meta.name) == "aaa1"
    assert again.lookup("aa").id == "aaa1"
    again.discard("bbb2")
    assert not (tmp_path / "sandboxes" / "bbb2").exists()


def test_state_transitions(tmp_path: Path) -> None:
    pod = make("ccc3")
    pod.set_state(SandboxState.NOTREADY)
    pod.set_state(SandboxState.NOTREADY)  # idempotent
    with pytest.raises(FailedPrecondition):
        pod.set_state(SandboxState.READY)


def test_torn_metadata_is_discarded(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path)
    d = tmp_path / "sandboxes" / "ddd4"
    d.mkdir(parents=True)
    (d / "meta.json").write_text("{not json")
    loaded, unfinished = store.load()
    assert (loaded, unfinished) == ([], [])
    assert not d.exists()
