from __future__ import annotations

from pathlib import Path

from cri.image.image_fs_info import image_fs_info
from cri.image.store import ImageStore
from sandbox.diskusage import UsageCache, usage


def test_disk_usage_counts_allocated_bytes_and_inodes(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "layers" / "a").mkdir(parents=True)
    (root / "layers" / "a" / "blob").write_bytes(b"x" * 100_000)
    (root / "link").symlink_to("/etc/passwd")  # one inode, never followed
    used, inodes = usage(root)
    assert inodes == 5  # tree, layers, a, blob, link
    assert used >= 100_000


def test_image_fs_info_from_measured_layers(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.load()
    containers = tmp_path / "containers"
    containers.mkdir()
    empty_bytes, empty_inodes = store.store_usage()
    tmp = store.new_tmp()
    (tmp / "diff").mkdir()
    (tmp / "diff" / "f").write_bytes(b"y" * 200_000)
    store.commit_layer("sha256:" + "a" * 64, tmp / "diff")
    resp = image_fs_info(store, containers, UsageCache())
    fs = resp.image_filesystems[0]
    assert fs.fs_id.mountpoint == str(store.root)
    assert fs.used_bytes.value >= empty_bytes + 200_000
    assert fs.inodes_used.value == empty_inodes + 2  # the layer's diff dir and its file
    assert resp.container_filesystems[0].inodes_used.value == 1
    assert resp.container_filesystems[0].timestamp > 0
    # Measured once and remembered, also across a restart of the store.
    again = ImageStore(tmp_path / "images")
    again.open()
    assert again.store_usage()[0] >= empty_bytes + 200_000


def test_container_usage_is_reused_in_proportion_to_its_cost(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.load()
    containers = tmp_path / "containers"
    (containers / "c1" / "upper").mkdir(parents=True)
    now = [100.0]
    walks: list[Path] = []

    def walk(path: Path) -> tuple[int, int]:
        walks.append(path)
        now[0] += 2.0  # a walk that takes 2 s
        return 4096 * len(walks), 3

    cache = UsageCache(walk=walk, clock=lambda: now[0])
    first = image_fs_info(store, containers, cache).container_filesystems[0]
    assert (first.used_bytes.value, first.inodes_used.value) == (4096, 3)
    now[0] += 100.0  # well within 100 x 2 s: the same figures, with their first timestamp
    again = image_fs_info(store, containers, cache).container_filesystems[0]
    assert again == first and walks == [containers]
    now[0] += 200.0
    assert image_fs_info(store, containers, cache).container_filesystems[0].used_bytes.value \
        == 8192


def test_a_symlinked_dir_in_a_writable_layer_is_not_followed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.load()
    containers = tmp_path / "containers"
    upper = containers / "c1" / "upper"
    upper.mkdir(parents=True)
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "big").write_bytes(b"z" * 1_000_000)
    (upper / "escape").symlink_to(tmp_path / "host")
    fs = image_fs_info(store, containers, UsageCache()).container_filesystems[0]
    assert fs.inodes_used.value == 4  # containers, c1, upper, the link
    assert fs.used_bytes.value < 1_000_000
