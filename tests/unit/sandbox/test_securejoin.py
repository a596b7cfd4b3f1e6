from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.securejoin import open_in_root, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("inside\n")
    return r


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A file outside the rootfs that no resolution may reach."""
    secret = tmp_path / "host" / "shadow"
    secret.parent.mkdir()
    secret.write_text("host secret\n")
    return secret


def _read(root: Path, path: str) -> str:
    fd = open_in_root(root, path, os.O_RDONLY)
    with os.fdopen(fd) as f:
        return f.read()


def _escape_target(host_file: Path) -> str:
    # Enough ".." to reach the host's / from anywhere under tmp_path, then the host path.
    return "../" * 30 + str(host_file).lstrip("/")


def test_plain_path(root: Path) -> None:
    assert resolve_in_root(root, "/etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "etc//./passwd") == root / "etc" / "passwd"
    assert _read(root, "/etc/passwd") == "inside\n"


def test_root_itself(root: Path) -> None:
    for path in ("/", "", ".", "/..", "../../.."):
        assert resolve_in_root(root, path) == root
        fd = open_in_root(root, path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert os.fstat(fd).st_ino == root.stat().st_ino
        finally:
            os.close(fd)


def test_dotdot_in_the_path_is_clamped_at_root(root: Path) -> None:
    assert resolve_in_root(root, "/../../../etc/passwd") == root / "etc" / "passwd"
    assert _read(root, "../../etc/../../etc/passwd") == "inside\n"


def test_absolute_symlink_restarts_at_root(root: Path, host_secret: Path) -> None:
    (root / "etc" / "shadow").symlink_to(host_secret)
    assert resolve_in_root(root, "/etc/shadow") == root / str(host_secret).lstrip("/")
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/etc/shadow", os.O_RDONLY)


def test_absolute_symlink_reaches_the_copy_inside(root: Path, host_secret: Path) -> None:
    (root / "etc" / "shadow").symlink_to(host_secret)
    inside = root / str(host_secret).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("image copy\n")
    assert _read(root, "/etc/shadow") == "image copy\n"


def test_relative_dotdot_symlink_escape(root: Path, host_secret: Path) -> None:
    (root / "etc" / "shadow").symlink_to(_escape_target(host_secret))
    assert resolve_in_root(root, "etc/shadow") == root / str(host_secret).lstrip("/")
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "etc/shadow", os.O_RDONLY)


def test_absolute_dotdot_symlink_escape(root: Path) -> None:
    (root / "host").mkdir()
    (root / "host" / "passwd").write_text("inside host dir\n")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("/../../../../host/passwd")
    assert resolve_in_root(root, "/etc/passwd") == root / "host" / "passwd"
    assert _read(root, "/etc/passwd") == "inside host dir\n"


def test_proc_self_root_symlink_stays_inside(root: Path, host_secret: Path) -> None:
    # On the host, /proc/self/root/<secret> is the secret itself; inside the rootfs it is a path
    # under <root>/proc that the image may or may not have.
    target = "/proc/self/root" + str(host_secret)
    (root / "etc" / "shadow").symlink_to(target)
    assert Path(target).read_text() == "host secret\n"  # the trap is real on this host
    assert resolve_in_root(root, "/etc/shadow") == root / target.lstrip("/")
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/etc/shadow", os.O_RDONLY)


def test_symlinked_etc_directory(tmp_path: Path, host_secret: Path) -> None:
    root = tmp_path / "r"
    (root / "private" / "etc").mkdir(parents=True)
    (root / "private" / "etc" / "passwd").write_text("private\n")
    (root / "etc").symlink_to("/private/etc")
    assert resolve_in_root(root, "/etc/passwd") == root / "private" / "etc" / "passwd"
    assert _read(root, "/etc/passwd") == "private\n"

    (root / "etc").unlink()
    (root / "etc").symlink_to(host_secret.parent)  # an absolute host directory
    assert resolve_in_root(root, "/etc/shadow") == root / str(host_secret).lstrip("/")
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/etc/shadow", os.O_RDONLY)

    (root / "etc").unlink()
    (root / "etc").symlink_to(_escape_target(host_secret.parent))
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/etc/shadow", os.O_RDONLY)


def test_dotdot_after_a_symlinked_dir_is_physical(tmp_path: Path) -> None:
    # As the kernel does: "etc/.." is the parent of where etc points, not the root.
    root = tmp_path / "r"
    (root / "usr" / "etc").mkdir(parents=True)
    (root / "usr" / "x").write_text("usr x\n")
    (root / "etc").symlink_to("usr/etc")
    assert resolve_in_root(root, "etc/../x") == root / "usr" / "x"
    assert _read(root, "etc/../x") == "usr x\n"


def test_chain_of_symlinks(root: Path) -> None:
    (root / "c").mkdir()
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/c/../d")
    (root / "d").symlink_to("etc")
    (root / "etc" / "link").symlink_to("../a/passwd")
    assert resolve_in_root(root, "/etc/link") == root / "etc" / "passwd"
    assert _read(root, "/etc/link") == "inside\n"


@pytest.mark.parametrize("pair", [("a", "a"), ("a", "b"), ("a", "/b/x")])
def test_symlink_loops(root: Path, pair: tuple[str, str]) -> None:
    (root / "a").symlink_to(pair[1])
    if pair[1] != "a":
        (root / "b").symlink_to("/a")
    with pytest.raises(OSError) as resolved:
        resolve_in_root(root, "/a")
    assert resolved.value.errno == errno.ELOOP
    with pytest.raises(OSError) as opened:
        open_in_root(root, "/a", os.O_RDONLY)
    assert opened.value.errno == errno.ELOOP


def test_max_links_is_the_limit(root: Path) -> None:
    (root / "l0").symlink_to("/etc/passwd")
    for i in range(1, 5):
        (root / f"l{i}").symlink_to(f"l{i - 1}")
    assert resolve_in_root(root, "l4", max_links=5) == root / "etc" / "passwd"
    assert _read(root, "l4") == "inside\n"
    with pytest.raises(OSError) as exc:
        resolve_in_root(root, "l4", max_links=4)
    assert exc.value.errno == errno.ELOOP
    with pytest.raises(OSError) as exc:
        open_in_root(root, "l4", os.O_RDONLY, max_links=4)
    assert exc.value.errno == errno.ELOOP


def test_missing_components_are_plain_names(root: Path) -> None:
    assert resolve_in_root(root, "/no/such/dir/file") == root / "no" / "such" / "dir" / "file"
    assert resolve_in_root(root, "/no/../etc/passwd") == root / "etc" / "passwd"
    assert resolve_in_root(root, "/etc/passwd/x") == root / "etc" / "passwd" / "x"
    (root / "dangling").symlink_to("/nowhere/file")
    assert resolve_in_root(root, "/dangling") == root / "nowhere" / "file"
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/no/such/file", os.O_RDONLY)
    with pytest.raises(FileNotFoundError):  # the kernel's view: "no/.." needs "no" to exist
        open_in_root(root, "/no/../etc/passwd", os.O_RDONLY)
    with pytest.raises(FileNotFoundError):
        open_in_root(root, "/dangling", os.O_RDONLY)
    with pytest.raises(NotADirectoryError):
        open_in_root(root, "/etc/passwd/x", os.O_RDONLY)


def test_fd_is_close_on_exec(root: Path) -> None:
    fd = open_in_root(root, "/etc/passwd", os.O_RDONLY)
    try:
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def _swap_after_lstat(monkeypatch: pytest.MonkeyPatch, name: str, swap: Callable[[], None]) -> None:
    """Make ``name`` change right after the walk has lstat-ed it: a tree modified under our feet."""
    real_stat = os.stat

    def stat_then_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if path == name:
            swap()
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)


def test_final_component_swapped_for_a_symlink(
        root: Path, host_secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = root / "etc" / "passwd"

    def swap() -> None:
        passwd.unlink()
        passwd.symlink_to(host_secret)

    _swap_after_lstat(monkeypatch, "passwd", swap)
    with pytest.raises(OSError) as exc:
        open_in_root(root, "/etc/passwd", os.O_RDONLY)
    assert exc.value.errno == errno.ELOOP


def test_directory_swapped_for_a_symlink(
        root: Path, host_secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = root / "etc"

    def swap() -> None:
        etc.rename(root / "old-etc")
        etc.symlink_to(host_secret.parent)

    _swap_after_lstat(monkeypatch, "etc", swap)
    with pytest.raises(NotADirectoryError):
        open_in_root(root, "/etc/shadow", os.O_RDONLY)


def test_regular_only(root: Path) -> None:
    os.mkfifo(root / "etc" / "fifo")
    (root / "etc" / "to-fifo").symlink_to("fifo")
    for path in ("/etc/fifo", "/etc/to-fifo", "/etc", "/"):
        with pytest.raises(OSError) as exc:
            open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK, regular_only=True)
        assert exc.value.errno == errno.EINVAL
    fd = open_in_root(root, "/etc/passwd", os.O_RDONLY, regular_only=True)
    os.close(fd)


def test_fifo_opens_nonblocking_without_regular_only(root: Path) -> None:
    os.mkfifo(root / "etc" / "fifo")
    fd = open_in_root(root, "/etc/fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 10) == b""  # no writer: EOF, not a hang
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_regular_only_never_opens_a_device(root: Path) -> None:
    # A character device with no driver behind it: opening it would fail with ENXIO/ENODEV,
    # so EINVAL shows the refusal came before any open().
    os.mknod(root / "etc" / "dev", 0o600 | stat.S_IFCHR, os.makedev(240, 77))
    with pytest.raises(OSError) as exc:
        open_in_root(root, "/etc/dev", os.O_RDONLY | os.O_NONBLOCK, regular_only=True)
    assert exc.value.errno == errno.EINVAL


def test_refuses_o_creat_and_nul(root: Path) -> None:
    with pytest.raises(ValueError):
        open_in_root(root, "/etc/new", os.O_WRONLY | os.O_CREAT)
    assert not (root / "etc" / "new").exists()
    with pytest.raises(ValueError):
        resolve_in_root(root, "/etc/pass\0wd")


def test_no_fd_leak(root: Path, host_secret: Path) -> None:
    (root / "etc" / "loop").symlink_to("loop")
    before = len(os.listdir("/proc/self/fd"))
    for path in ("/etc/passwd", "/etc/loop", "/etc/passwd/x", "/etc/missing", "/etc/../etc"):
        with contextlib.suppress(OSError):
            os.close(open_in_root(root, path, os.O_RDONLY))
    assert len(os.listdir("/proc/self/fd")) == before
