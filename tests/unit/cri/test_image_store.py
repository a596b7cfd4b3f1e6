"""The image store on its own: chain ids, short links, garbage collection and start-up cleanup
after a daemon died mid-pull."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cri.image import store as store_mod
from cri.image.store import ImageRecord, ImageStore, chain_ids, purge

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_chain_ids_follow_the_image_spec() -> None:
    assert chain_ids([A]) == [A]
    second = "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    assert chain_ids([A, B]) == [A, second]


def _layer(store: ImageStore, chain_id: str, content: str) -> None:
    tmp = store.new_tmp()
    (tmp / "diff").mkdir()
    (tmp / "diff" / "f").write_text(content)
    store.commit_layer(chain_id, tmp / "diff")
    tmp.rmdir()


def _two_layers(root: Path) -> tuple[ImageStore, list[str], ImageRecord]:
    """A store with layers "lower" and "upper" and a record of the image made of both."""
    store = ImageStore(root)
    store.load()
    chain = chain_ids([A, B])
    for c, text in zip(chain, ("lower", "upper"), strict=True):
        _layer(store, c, text)
    return store, chain, ImageRecord(id="sha256:" + "1" * 64, config_digest="sha256:" + "1" * 64,
                                     manifest_digest="sha256:" + "2" * 64, chain_ids=chain)


def test_layers_are_shared_and_freed_with_their_last_image(tmp_path: Path) -> None:
    store, chain, one = _two_layers(tmp_path)
    two = ImageRecord(id="sha256:" + "3" * 64, config_digest="sha256:" + "3" * 64,
                      manifest_digest="sha256:" + "4" * 64, chain_ids=chain[:1])
    store.put_blob(one.config_digest, b"{}")
    store.save(one)
    store.save(two)
    lower = store.lowerdir(chain)
    assert lower.count(":") == 1 and all(len(p) <= 14 for p in lower.split(":"))
    assert (tmp_path / lower.split(":")[1] / "f").read_text() == "lower"  # topmost first
    freed = store.delete(one)
    assert store.has_layer(chain[0]) and not store.has_layer(chain[1])
    assert not store.blob_path(one.config_digest).exists()
    # The freed layer is out of the store at once; its tree goes when the caller purges it.
    assert [p.parent for p in freed] == [store.tmp] and (freed[0] / "diff" / "f").exists()
    purge(freed)
    assert list(store.tmp.iterdir()) == []
    purge(store.delete(two))
    assert list(store.layers.iterdir()) == [] and list(store.links.iterdir()) == []
    assert list(store.tmp.iterdir()) == []


def test_layers_freed_but_not_yet_deleted_are_cleared_at_start_up(tmp_path: Path) -> None:
    store, _, one = _two_layers(tmp_path)
    store.save(one)
    assert len(store.delete(one)) == 2  # the daemon was killed before it purged them
    fresh = ImageStore(tmp_path)
    fresh.load()
    assert list(fresh.tmp.iterdir()) == [] and list(fresh.layers.iterdir()) == []


def test_start_up_cleans_what_a_killed_pull_left(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.load()
    _layer(store, A, "committed, but no image record was written")
    (store.layer_dir(B) / "diff").mkdir(parents=True)  # moved in, link never written
    junk = store.new_tmp()
    (junk / "blob").write_bytes(b"half a download")
    fresh = ImageStore(tmp_path)
    fresh.load()
    assert fresh.images == {}
    assert list(fresh.tmp.iterdir()) == []
    assert list(fresh.layers.iterdir()) == [] and list(fresh.links.iterdir()) == []


def test_an_image_with_120_layers_mounts(tmp_path: Path) -> None:
    """Short links keep the overlay option string far below the kernel's page-size limit."""
    import asyncio
    import os
    import subprocess

    import pytest

    from cri.image.rootfs import mount_rootfs, unmount

    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    store = ImageStore(tmp_path / "store")
    store.load()
    diffs = ["sha256:" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(120)]
    chain = chain_ids(diffs)
    for i, c in enumerate(chain):
        tmp = store.new_tmp()
        (tmp / "diff").mkdir()
        (tmp / "diff" / f"file{i}").write_text(str(i))
        (tmp / "diff" / "top").write_text(str(i))
        store.commit_layer(c, tmp / "diff")
        tmp.rmdir()
    assert len(store.lowerdir(chain)) < 2000
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    asyncio.run(mount_rootfs(store, chain, ro))
    asyncio.run(mount_rootfs(store, chain, rw, upper=tmp_path / "upper"))
    try:
        for root in (ro, rw):
            assert (root / "file0").read_text() == "0" and (root / "file119").read_text() == "119"
            assert (root / "top").read_text() == "119"  # the last layer wins
        (rw / "new").write_text("x")
        assert (tmp_path / "upper" / "new").exists()
        write = subprocess.run(["touch", str(ro / "new")], capture_output=True)
        assert write.returncode != 0  # the read-only view refuses writes
    finally:
        unmount(ro)
        unmount(rw)


def test_name_of_an_image_for_container_status() -> None:
    from cri.image.images import name_of

    rec = ImageRecord(id="sha256:" + "a" * 64, config_digest="sha256:" + "a" * 64,
                      manifest_digest="sha256:" + "b" * 64,
                      repo_tags=["docker.io/library/busybox:latest", "ctr.test/bb:1"],
                      repo_digests=["docker.io/library/busybox@sha256:" + "b" * 64])
    # The name the user asked for, normalised as the store keeps it.
    assert name_of(rec, "busybox") == "docker.io/library/busybox:latest"
    assert name_of(rec, "ctr.test/bb:1", "busybox") == "ctr.test/bb:1"
    assert name_of(rec, "busybox@sha256:" + "b" * 64) == f"docker.io/library/busybox@sha256:{'b' * 64}"
    # An id, a name of another image, or nothing: the image's own first tag.
    assert name_of(rec, rec.id) == "docker.io/library/busybox:latest"
    assert name_of(rec, "other:2", "") == "docker.io/library/busybox:latest"
    assert name_of(rec, "Not A Reference!") == "docker.io/library/busybox:latest"
    # Known by digest only, then by id only.
    rec.repo_tags = []
    assert name_of(rec) == f"docker.io/library/busybox@sha256:{'b' * 64}"
    rec.repo_digests = []
    assert name_of(rec, "busybox") == ""


def test_layers_not_yet_on_disk_when_the_machine_went_down_are_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    monkeypatch.setattr(store_mod, "BOOT_ID", boot)
    store, chain, rec = _two_layers(tmp_path / "images")
    store.save(rec)
    assert store.unsynced(chain[0]) and store.unsynced(chain[1])
    assert (store.layer_dir(chain[0]) / "unsynced").read_text() == "boot-1"
    store.sync_layers([chain[0]])
    assert not store.unsynced(chain[0]) and store.unsynced(chain[1])

    same_boot = ImageStore(tmp_path / "images")  # the daemon restarted: nothing was lost
    same_boot.load()
    assert rec.id in same_boot.images and same_boot.has_layer(chain[1])

    boot.write_text("boot-2\n")  # the machine went down before the upper layer was synced
    rebooted = ImageStore(tmp_path / "images")
    rebooted.load()
    assert rebooted.images == {} and list(rebooted.records.iterdir()) == []
    assert not rebooted.has_layer(chain[1])
    # The synced lower layer went with the garbage: no image uses it any more.
    assert sorted(p.name for p in rebooted.layers.iterdir()) == []
    assert list(rebooted.links.iterdir()) == []
