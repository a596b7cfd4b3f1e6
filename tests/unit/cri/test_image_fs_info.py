from __future__ import annotations

from pathlib import Path

from cri.image.image_fs_info import image_fs_info, usage


def test_usage_counts_allocated_bytes_and_inodes(tmp_path: Path) -> None:
    images, containers = tmp_path / "images", tmp_path / "containers"
    (images / "layers" / "a").mkdir(parents=True)
    containers.mkdir()
    (images / "layers" / "a" / "blob").write_bytes(b"x" * 100_000)
    (images / "link").symlink_to("/etc/passwd")  # counted as one inode, never followed
    used, inodes = usage(images)
    assert inodes == 5  # images, layers, a, blob, link
    assert used >= 100_000
    resp = image_fs_info(images, containers)
    assert resp.image_filesystems[0].fs_id.mountpoint == str(images)
    assert resp.image_filesystems[0].used_bytes.value == used
    assert resp.container_filesystems[0].inodes_used.value == 1
    assert resp.container_filesystems[0].timestamp > 0
