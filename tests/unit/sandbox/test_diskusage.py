from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.diskusage import UsageCache, usage

MiB = 1 << 20


def _du(path: Path) -> tuple[int, int]:
    """GNU du's answer, an independent reading of the same rules (-x, links once, no follow)."""

    def run(*flags: str) -> int:
        out = subprocess.run(["du", "-s", "-x", *flags, str(path)], check=True, capture_output=True)
        return int(out.stdout.split()[0])

    return run("-B1"), run("--inodes")


def _tree(base: Path) -> Path:
    top = base / "tree"
    (top / "a/b/c").mkdir(parents=True)
    (top / "a/one").write_bytes(b"1" * 10_000)
    (top / "a/b/two").write_bytes(b"2" * 300_000)
    (top / "a/b/c/empty").touch()
    (top / "fifo-like").write_text("x")
    return top


def test_counts_like_du(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    used, inodes = usage(top)
    assert (used, inodes) == _du(top)
    assert inodes == 8  # tree, a, b, c and four files
    assert used >= 310_000


def test_hard_links_count_once_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    before = usage(top)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"b" * MiB)
    os.link(top / "a/b/two", top / "two-again")
    os.link(top / "a/b/two", top / "a/b/c/two-thrice")
    (top / "to-big").symlink_to(outside / "big")
    (top / "to-dir").symlink_to(outside)
    (top / "to-root").symlink_to("/")
    used, inodes = usage(top)
    assert inodes == before[1] + 3  # the three symlinks; the links add no inode
    assert used < before[0] + MiB  # nothing of what the symlinks point at
    assert (used, inodes) == _du(top)


def test_sparse_files_count_allocated_blocks(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    top.mkdir()
    with (top / "sparse").open("wb") as f:
        f.truncate(1 << 30)
    used, inodes = usage(top)
    assert inodes == 2
    assert used < MiB


def test_top_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        usage(tmp_path / "missing")
    f = tmp_path / "file"
    f.write_bytes(b"x" * 50_000)
    assert usage(f) == (os.lstat(f).st_blocks * 512, 1)
    big = _tree(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(big)
    assert usage(link) == (os.lstat(link).st_blocks * 512, 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_mount_points_are_left_out(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    mnt = top / "a/mnt"
    mnt.mkdir()
    before = usage(top)
    mnt_dir = os.lstat(mnt).st_blocks * 512
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "pycri-test", str(mnt)], check=True)
    try:
        (mnt / "big").write_bytes(b"m" * MiB)
        (mnt / "sub").mkdir()
        assert usage(top) == (before[0] - mnt_dir, before[1] - 1)
        assert usage(top) == _du(top)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- a tree that changes during the walk ---------------------------------------------------------


class _Listing:
    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self.entries = entries

    def __enter__(self) -> Iterator[os.DirEntry[str]]:
        return iter(self.entries)

    def __exit__(self, *exc: object) -> None:
        return None


def _after_first_listing(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[list[os.DirEntry[str]]], None]
) -> None:
    """Run ``change`` once, between the walk's listing of the top directory and its use."""
    real = os.scandir
    done = False

    def scandir(path: Any = ".") -> Any:
        nonlocal done
        if done or not isinstance(path, int):
            return real(path)
        done = True
        with real(path) as it:
            entries = list(it)
        change(entries)
        return _Listing(entries)

    monkeypatch.setattr(os, "scandir", scandir)


def test_entries_vanishing_mid_walk_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = _tree(tmp_path)
    (top / "gone").write_bytes(b"g" * 100_000)
    (top / "gone-dir/deeper").mkdir(parents=True)
    (top / "gone-dir/deeper/file").write_bytes(b"g" * 100_000)

    def remove(_: list[os.DirEntry[str]]) -> None:
        (top / "gone").unlink()
        shutil.rmtree(top / "gone-dir")

    _after_first_listing(monkeypatch, remove)
    result = usage(top)
    monkeypatch.undo()
    assert result == usage(top) == _du(top)


def test_directory_swapped_for_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "sub/x").touch()
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(5):
        (outside / f"big{i}").write_bytes(b"o" * MiB)

    def swap(entries: list[os.DirEntry[str]]) -> None:
        for entry in entries:  # the walk sees "sub" as the directory it was when listed
            entry.stat(follow_symlinks=False)
        (top / "sub").rename(tmp_path / "moved")
        (top / "sub").symlink_to(outside)

    _after_first_listing(monkeypatch, swap)
    used, inodes = usage(top)
    assert inodes == 2  # top and the listed "sub"; nothing below the symlink
    assert used < MiB


# --- UsageCache ------------------------------------------------------------------------------


class FakeTree:
    """A walk that costs ``cost`` seconds of a fake clock and reports a growing size."""

    def __init__(self, cost: float) -> None:
        self.now = 1000.0
        self.cost = cost
        self.walks = 0

    def clock(self) -> float:
        return self.now

    def walk(self, path: Path) -> tuple[int, int]:
        if not path.exists():
            raise FileNotFoundError(path)
        self.walks += 1
        self.now += self.cost
        return self.walks * 4096, self.walks


def test_cheap_trees_are_measured_on_every_call(tmp_path: Path) -> None:
    tree = FakeTree(cost=0.0)
    cache = UsageCache(walk=tree.walk, clock=tree.clock)
    assert [cache.usage("c1", tmp_path).used_bytes for _ in range(3)] == [4096, 8192, 12288]


def test_costly_walks_are_reused_in_proportion_to_their_cost(tmp_path: Path) -> None:
    tree = FakeTree(cost=0.4)  # a layer with ~100k files
    times = iter(range(10**9, 2 * 10**9, 10**6))
    cache = UsageCache(100.0, walk=tree.walk, clock=tree.clock, wall_ns=lambda: next(times))
    first = cache.usage("c1", tmp_path)
    tree.now += 39.0  # 0.4 s walk -> reused for 40 s from its start
    assert cache.usage("c1", tmp_path) == first and tree.walks == 1
    tree.now += 1.0
    again = cache.usage("c1", tmp_path)
    assert tree.walks == 2 and again.used_bytes == 8192 and again.at_ns > first.at_ns
    # Each key is its own; retain() drops the others (removed containers).
    cache.usage("c2", tmp_path)
    assert tree.walks == 3
    cache.retain({"c2"})
    cache.usage("c1", tmp_path)
    assert tree.walks == 4


def test_a_tree_that_is_gone_is_not_cached(tmp_path: Path) -> None:
    tree = FakeTree(cost=1.0)
    cache = UsageCache(walk=tree.walk, clock=tree.clock)
    with pytest.raises(FileNotFoundError):
        cache.usage("c1", tmp_path / "missing")
    (tmp_path / "missing").mkdir()
    assert cache.usage("c1", tmp_path / "missing").inodes == 1


def test_the_real_walk_through_the_cache(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10000)
    m = UsageCache().usage("c1", tmp_path)
    assert m.used_bytes >= 10000 and m.inodes == 2 and m.at_ns > 0
