from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import shm

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _mount_entry(path: Path) -> tuple[str, set[str]] | None:
    """(fstype, mount options) of the top mount at ``path``, from mountinfo."""
    found = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            sep = fields.index("-")
            found = (fields[sep + 1], set(fields[5].split(",")) | set(fields[sep + 3].split(",")))
    return found


@pytest.fixture
def shm_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pod" / "shm"
    yield path
    # Whatever a failed test left mounted goes, so tmp_path can be removed.
    while _mount_entry(path) is not None:
        subprocess.run(["umount", "-l", str(path)], check=True)


@root_only
def test_mount_and_unmount(shm_dir: Path) -> None:
    shm.mount_shm(shm_dir, 1 << 20)
    entry = _mount_entry(shm_dir)
    assert entry is not None
    fstype, options = entry
    assert fstype == "tmpfs"
    assert {"nosuid", "nodev", "noexec", "size=1024k"} <= options
    assert stat.S_IMODE(shm_dir.stat().st_mode) == 0o1777
    vfs = os.statvfs(shm_dir)
    assert vfs.f_blocks * vfs.f_frsize == 1 << 20
    (shm_dir / "segment").write_bytes(b"x")

    shm.unmount_shm(shm_dir)
    assert _mount_entry(shm_dir) is None
    assert not shm_dir.exists()
    shm.unmount_shm(shm_dir)  # idempotent


@root_only
def test_default_size_is_64m(shm_dir: Path) -> None:
    shm.mount_shm(shm_dir)
    entry = _mount_entry(shm_dir)
    assert entry is not None and "size=65536k" in entry[1]
    shm.unmount_shm(shm_dir)


@root_only
def test_refuses_to_stack(shm_dir: Path) -> None:
    shm.mount_shm(shm_dir, 1 << 20)
    with pytest.raises(OSError) as info:
        shm.mount_shm(shm_dir, 1 << 20)
    assert info.value.errno == errno.EBUSY
    shm.unmount_shm(shm_dir)
    assert _mount_entry(shm_dir) is None


@root_only
def test_unmount_peels_stacked_mounts(shm_dir: Path) -> None:
    shm.mount_shm(shm_dir, 1 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shm_dir)], check=True)
    shm.unmount_shm(shm_dir)
    assert _mount_entry(shm_dir) is None
    assert not shm_dir.exists()


@root_only  # umount2 answers EPERM, not EINVAL, to non-root callers
def test_unmount_keeps_a_non_empty_plain_dir(tmp_path: Path) -> None:
    # Not a mount and not empty: this is not our tmpfs, so its contents are not deleted.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep").write_text("x")
    with pytest.raises(OSError) as info:
        shm.unmount_shm(plain)
    assert info.value.errno == errno.ENOTEMPTY
    assert (plain / "keep").exists()


@root_only
def test_unmount_of_plain_or_missing_dir(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    shm.unmount_shm(plain)
    assert not plain.exists()
    shm.unmount_shm(tmp_path / "missing")


# 1 << 70 matters: tmpfs wraps such a size to 0, which means "unlimited".
@pytest.mark.parametrize("size", [0, -1, True, 1.5, "64m", 1 << 63, 1 << 70])
def test_bad_size(tmp_path: Path, size: object) -> None:
    with pytest.raises(ValueError):
        shm.mount_shm(tmp_path / "shm", size)  # type: ignore[arg-type]
    assert not (tmp_path / "shm").exists()


@pytest.mark.parametrize("path", ["", ".", "/", "relative/shm", "//"])
def test_unmount_refuses_dangerous_paths(path: str) -> None:
    with pytest.raises(ValueError):
        shm.unmount_shm(Path(path))
