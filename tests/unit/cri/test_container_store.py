"""Container records: the state machine as a table, and durable state that survives a restart
(status.json is the commit marker; a creation cut short comes back for teardown)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cri.api import api_pb2
from cri.errors import AlreadyExists, FailedPrecondition, NotFound
from cri.store.container import (
    STATE_VALUES,
    TRANSITIONS,
    Container,
    ContainerMeta,
    ContainerState,
    ContainerStatus,
    ContainerStore,
)

S = ContainerState


def meta(ident: str, pod: str = "pod1", name: str | None = None) -> ContainerMeta:
    return ContainerMeta(
        id=ident, name=name or f"k8s_app_{ident}_ns_uid_0", pod_id=pod, created_at=1_700_000_000_000,
        image="busybox:latest", image_id="sha256:" + "a" * 64, image_ref="busybox@sha256:" + "b" * 64,
        chain_ids=["sha256:" + "c" * 64, "sha256:" + "d" * 64], log_path="/var/log/pods/x/app/0.log",
        cgroup_path="/kubepods/pod1/" + ident, stop_signal=15, uid=1000, gid=1000,
        additional_gids=[10, 20], username="app", pid_namespace="container",
        image_mounts={"/data": "sha256:" + "e" * 64},
    )


def config(name: str = "app") -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=0),
        image=api_pb2.ImageSpec(image="busybox:latest"),
        command=["sh", "-c", "sleep 1"],
        envs=[api_pb2.KeyValue(key="A", value=b"1")],
    )


def make(store: ContainerStore, ident: str, pod: str = "pod1") -> Container:
    return store.new(meta(ident, pod), config(ident))


# --- the state machine ---------------------------------------------------------------------

def test_transition_table_is_complete_and_exited_is_final() -> None:
    assert set(TRANSITIONS) == set(S)
    assert set(STATE_VALUES) == set(S)
    assert TRANSITIONS[S.EXITED] == frozenset()
    assert S.RUNNING in TRANSITIONS[S.CREATED]
    assert S.EXITED in TRANSITIONS[S.CREATED]  # stopped before it was ever started
    assert S.CREATED not in TRANSITIONS[S.RUNNING]
    assert STATE_VALUES[S.RUNNING] == api_pb2.ContainerState.CONTAINER_RUNNING


def test_set_state_follows_the_table(tmp_path: Path) -> None:
    ctr = make(ContainerStore(tmp_path), "c1")
    assert ctr.status.state is S.CREATED and not ctr.running
    ctr.set_state(S.RUNNING)
    assert ctr.running
    ctr.set_state(S.RUNNING)  # staying put is always allowed
    with pytest.raises(FailedPrecondition, match="running to created"):
        ctr.set_state(S.CREATED)
    assert ctr.status.state is S.RUNNING  # a refused change changes nothing
    ctr.set_state(S.EXITED)
    for new in (S.CREATED, S.RUNNING, S.UNKNOWN):
        with pytest.raises(FailedPrecondition):
            ctr.set_state(new)
    ctr.set_state(S.EXITED)


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_every_pair_against_the_table(tmp_path: Path, old: ContainerState, new: ContainerState) -> None:
    ctr = make(ContainerStore(tmp_path), "c1")
    ctr.status.state = old
    if new is old or new in TRANSITIONS[old]:
        ctr.set_state(new)
        assert ctr.status.state is new
    else:
        with pytest.raises(FailedPrecondition):
            ctr.set_state(new)
        assert ctr.status.state is old


def test_paths(tmp_path: Path) -> None:
    ctr = make(ContainerStore(tmp_path), "c1")
    assert ctr.dir == tmp_path / "containers" / "c1"
    assert ctr.bundle == ctr.dir / "bundle"
    assert ctr.rootfs == ctr.dir / "bundle" / "rootfs"
    assert ctr.upper == ctr.dir / "upper"
    assert ctr.id == "c1"


# --- durable state ---------------------------------------------------------------------------

def test_round_trip_through_disk(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ctr = make(store, "abc123")
    store.begin(ctr)
    store.names.reserve(ctr.meta.name, ctr.id)
    store.commit(ctr)
    ctr.set_state(S.RUNNING)
    ctr.status.pid = 4242
    ctr.status.started_at = 5
    ctr.status.resources = api_pb2.LinuxContainerResources(
        memory_limit_in_bytes=64 << 20, cpu_shares=512, unified={"memory.high": "max"},
    ).SerializeToString()
    store.save(ctr)
    assert stat.S_IMODE(os.stat(ctr.dir).st_mode) == 0o700
    assert {p.name for p in ctr.dir.iterdir()} == {"meta.json", "config.pb", "status.json"}

    again = ContainerStore(tmp_path)
    done, unfinished = again.load()
    assert unfinished == []
    assert [c.id for c in done] == ["abc123"]
    back = done[0]
    assert back.meta == ctr.meta
    assert back.config == ctr.config
    assert back.status == ctr.status
    assert back.status.state is S.RUNNING
    assert back.dir == ctr.dir
    res = api_pb2.LinuxContainerResources.FromString(back.status.resources)
    assert res.memory_limit_in_bytes == 64 << 20 and dict(res.unified) == {"memory.high": "max"}
    # Indexed as on the first run: by id, prefix, name and pod.
    assert again.get("abc123") is back
    assert again.lookup("abc") is back
    assert again.names.owner(ctr.meta.name) == "abc123"
    assert again.of_pod("pod1") == [back]
    assert len(again) == 1 and list(again) == [back]


def test_status_resources_are_stored_as_hex(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ctr = make(store, "c1")
    ctr.status.resources = b"\x00\xff binary \n"
    store.begin(ctr)
    store.commit(ctr)
    raw = json.loads((ctr.dir / "status.json").read_text())
    assert raw["resources"] == b"\x00\xff binary \n".hex()
    assert raw["state"] == "created"
    done, _ = ContainerStore(tmp_path).load()
    assert done[0].status.resources == b"\x00\xff binary \n"


def test_empty_resources_round_trip(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ctr = make(store, "c1")
    store.begin(ctr)
    store.commit(ctr)
    done, _ = ContainerStore(tmp_path).load()
    assert done[0].status == ContainerStatus()


def test_begun_but_not_committed_comes_back_unfinished(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ok, half = make(store, "aaa"), make(store, "bbb")
    store.begin(ok)
    store.commit(ok)
    store.begin(half)  # the daemon died here: no status.json
    assert store.get("bbb") is None  # begin alone does not index
    assert not (half.dir / "status.json").exists()

    again = ContainerStore(tmp_path)
    done, unfinished = again.load()
    assert [c.id for c in done] == ["aaa"]
    assert [c.meta for c in unfinished] == [half.meta]
    assert unfinished[0].config == half.config
    assert unfinished[0].dir == half.dir
    # Not indexed: recovery tears it down, then discards it.
    assert again.get("bbb") is None and again.of_pod("pod1") == [done[0]]
    assert again.names.owner(half.meta.name) is None
    with pytest.raises(NotFound):
        again.lookup("bbb")
    again.discard("bbb")
    assert not half.dir.exists()
    assert ok.dir.exists()


def test_sync_begin_after_a_rollback_is_harmless(tmp_path: Path) -> None:
    """The fsync of a record runs alongside runc: a creation rolled back meanwhile has
    removed the files, and syncing what is left must neither fail nor recreate them."""
    store = ContainerStore(tmp_path)
    ctr = make(store, "aaa")
    store.begin(ctr)
    store.sync_begin(ctr)
    assert ContainerStore(tmp_path).load()[1][0].meta == ctr.meta
    store.discard("aaa")
    store.sync_begin(ctr)
    assert not ctr.dir.exists()


def test_torn_status_comes_back_unfinished(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    for ident, text in (("s1", "{not json"), ("s2", '{"state": "bogus"}'), ("s3", "[]")):
        ctr = make(store, ident)
        store.begin(ctr)
        (ctr.dir / "status.json").write_text(text)
    done, unfinished = ContainerStore(tmp_path).load()
    assert done == []
    assert [c.id for c in unfinished] == ["s1", "s2", "s3"]


def test_status_without_state_comes_back_unfinished(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ctr = make(store, "s1")
    store.begin(ctr)
    (ctr.dir / "status.json").write_text("{}")
    done, unfinished = ContainerStore(tmp_path).load()
    assert done == [] and [c.id for c in unfinished] == ["s1"]


def test_garbage_dirs_are_discarded(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    good = make(store, "good")
    store.begin(good)
    store.commit(good)
    root = tmp_path / "containers"
    empty = root / "empty"
    empty.mkdir()
    torn = root / "torn"
    torn.mkdir()
    (torn / "meta.json").write_text("{not json")
    (torn / "config.pb").write_bytes(b"")
    alien = root / "alien"
    alien.mkdir()
    (alien / "meta.json").write_text(json.dumps({"id": "alien", "what": "else"}))
    (alien / "config.pb").write_bytes(b"")
    no_config = root / "noconfig"
    store.begin(make(store, "noconfig"))
    (no_config / "config.pb").unlink()

    done, unfinished = ContainerStore(tmp_path).load()
    assert [c.id for c in done] == ["good"]
    assert unfinished == []
    assert sorted(p.name for p in root.iterdir()) == ["good"]


def test_corrupt_config_is_discarded(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    bad = make(store, "badconfig")
    store.begin(bad)
    store.commit(bad)
    (bad.dir / "config.pb").write_bytes(b"\xff\xff\xff")
    done, unfinished = ContainerStore(tmp_path).load()
    assert done == [] and unfinished == []
    assert not bad.dir.exists()


def test_load_without_a_containers_dir(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    assert store.load() == ([], [])
    assert not (tmp_path / "containers").exists()


def test_of_pod_index(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a1, a2, b1 = make(store, "a1", "podA"), make(store, "a2", "podA"), make(store, "b1", "podB")
    for ctr in (a1, a2, b1):
        store.begin(ctr)
        store.commit(ctr)
    assert sorted(c.id for c in store.of_pod("podA")) == ["a1", "a2"]
    assert [c.id for c in store.of_pod("podB")] == ["b1"]
    assert store.of_pod("nope") == []
    # A copy: changing the list does not change the index.
    store.of_pod("podA").clear()
    assert len(store.of_pod("podA")) == 2
    store.delete(a1)
    assert [c.id for c in store.of_pod("podA")] == ["a2"]
    store.delete(a2)
    assert store.of_pod("podA") == []
    assert [c.id for c in store.of_pod("podB")] == ["b1"]


def test_delete_releases_name_and_id(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    ctr = make(store, "dead01")
    store.names.reserve(ctr.meta.name, ctr.id)
    store.begin(ctr)
    store.commit(ctr)
    with pytest.raises(AlreadyExists):
        store.names.reserve(ctr.meta.name, "other")
    store.delete(ctr)
    assert not ctr.dir.exists()
    assert store.get("dead01") is None and len(store) == 0
    assert store.ids.matches("dead") == []
    with pytest.raises(NotFound):
        store.lookup("dead01")
    assert store.names.owner(ctr.meta.name) is None
    store.names.reserve(ctr.meta.name, "other")  # the name is free for a new attempt
    assert ContainerStore(tmp_path).load() == ([], [])
    store.delete(ctr)  # twice is harmless


def test_iteration_is_a_snapshot(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    for ident in ("x1", "x2"):
        ctr = make(store, ident)
        store.begin(ctr)
        store.commit(ctr)
    for ctr in store:  # deleting while iterating must not break the loop
        store.delete(ctr)
    assert len(store) == 0
