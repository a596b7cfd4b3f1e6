"""Layer unpacking: the tar breakout corpus is refused with nothing written outside the layer;
whiteouts, metadata and compression come out as overlayfs expects."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cri.image.unpack import OPAQUE_XATTR, UnsafeLayer, unpack_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, xattrs)")
pytestmark = needs_root

Add = Callable[[tarfile.TarFile], None]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "",
          mode: int = 0o644, **kw: object) -> Add:
    def add(tf: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode, ti.size = kind, link, mode, len(data)
        ti.mtime = 1_600_000_000
        for k, v in kw.items():
            setattr(ti, k, v)
        tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return add


def layer(*adds: Add, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for add in adds:
            add(tf)
    return buf.getvalue()


def d(name: str, mode: int = 0o755) -> Add:
    return entry(name, tarfile.DIRTYPE, mode=mode)


def sym(name: str, target: str) -> Add:
    return entry(name, tarfile.SYMTYPE, link=target, mode=0o777)


def hard(name: str, target: str) -> Add:
    return entry(name, tarfile.LNKTYPE, link=target)


BREAKOUTS: dict[str, list[Add]] = {
    "dotdot": [entry("../outside", data=b"x")],
    "dotdot-inner": [d("a"), entry("a/../../outside", data=b"x")],
    "abs-dotdot": [entry("/../outside", data=b"x")],
    "symlink-parent-abs": [sym("a", "/etc"), entry("a/evil", data=b"x")],
    "symlink-parent-rel": [sym("a", "../.."), entry("a/outside", data=b"x")],
    "symlink-chain": [d("b"), sym("b/c", "../../.."), sym("a", "b/c"), entry("a/outside")],
    "symlink-parent-to-dir-inside": [d("real"), sym("a", "real"), entry("a/x", data=b"x")],
    "hardlink-abs": [hard("pw", "/etc/passwd")],
    "hardlink-dotdot": [hard("pw", "../outside-target")],
    "hardlink-via-symlink": [sym("etc", "/etc"), hard("pw", "etc/passwd")],
    "hardlink-missing": [hard("pw", "nope")],
    "whiteout-root": [entry(".wh..")],
    "whiteout-dotdot-dir": [d("a"), entry("a/.wh..")],
    "opaque-root": [entry(".wh..wh..opq")],
    "not-a-tar": [],
}


@pytest.mark.parametrize("case", sorted(BREAKOUTS))
def test_breakouts_are_refused_and_write_nothing_outside(tmp_path: Path, case: str) -> None:
    outside_target = tmp_path / "outside-target"
    outside_target.write_text("keep")
    before = sorted(p.name for p in tmp_path.iterdir())
    dest = tmp_path / "layer"
    dest.mkdir()
    data = b"garbage, not a tar at all" * 40 if case == "not-a-tar" else layer(*BREAKOUTS[case])
    passwd = Path("/etc/passwd").read_bytes()
    with pytest.raises(UnsafeLayer):
        unpack_layer(io.BytesIO(data), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "layer"])
    assert outside_target.read_text() == "keep"
    assert Path("/etc/passwd").read_bytes() == passwd
    assert not Path("/etc/evil").exists()
    assert os.stat("/etc/passwd").st_nlink == 1


def test_absolute_names_land_inside_the_layer(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(io.BytesIO(layer(entry("/etc/hostname", data=b"h"))), dest)
    assert (dest / "etc" / "hostname").read_bytes() == b"h"


def test_metadata_links_devices_and_diff_id(tmp_path: Path) -> None:
    tar = layer(
        d("./"),
        d("bin", mode=0o755),
        entry("bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
        entry("home/u/file", data=b"data", mode=0o600, uid=1000, gid=1001),
        sym("bin/sh", "/bin/busybox"),
        hard("bin/tool2", "bin/tool"),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry("caps", data=b"c", pax_headers={"SCHILY.xattr.user.note": "hi",
                                              "SCHILY.xattr.trusted.evil": "x"}),
        d("sticky", mode=0o1777),
    )
    dest = tmp_path / "layer"
    dest.mkdir()
    stats = unpack_layer(io.BytesIO(gzip.compress(tar)), dest, media_type="x+gzip")
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert stats.tar_bytes == len(tar)
    tool = os.stat(dest / "bin" / "tool")
    assert stat.S_IMODE(tool.st_mode) == 0o4755  # setuid survives the chown
    f = os.stat(dest / "home" / "u" / "file")
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1000, 1001, 0o600)
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox"
    assert os.stat(dest / "bin" / "tool2").st_ino == tool.st_ino
    null = os.stat(dest / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert stat.S_ISFIFO(os.stat(dest / "run" / "fifo").st_mode)
    assert os.getxattr(dest / "caps", "user.note") == b"hi"
    with pytest.raises(OSError):
        os.getxattr(dest / "caps", "trusted.evil")
    assert stat.S_IMODE(os.stat(dest / "sticky").st_mode) == 0o1777
    assert os.stat(dest / "bin").st_mtime == 1_600_000_000  # set after its children


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    unpack_layer(io.BytesIO(layer(entry("keep", data=b"k"), entry("gone", data=b"g"),
                                  d("dir"), entry("dir/old", data=b"o"))), lower)
    unpack_layer(io.BytesIO(layer(entry(".wh.gone"), d("dir"), entry("dir/.wh..wh..opq"),
                                  entry("dir/new", data=b"n"))), upper)
    wh = os.stat(upper / "gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper / "dir", OPAQUE_XATTR) == b"y"
    merged = tmp_path / "merged"
    merged.mkdir()
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={upper}:{lower}", str(merged)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"overlay mount not possible: {mount.stderr!r}")
    try:
        assert sorted(os.listdir(merged)) == ["dir", "keep"]
        assert os.listdir(merged / "dir") == ["new"]  # the opaque dir hides the lower content
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_plain_and_zstd_layers(tmp_path: Path) -> None:
    tar = layer(entry("a", data=b"plain"))
    dest = tmp_path / "plain"
    dest.mkdir()
    unpack_layer(io.BytesIO(tar), dest)
    assert (dest / "a").read_bytes() == b"plain"
    zstandard = pytest.importorskip("zstandard")
    dest = tmp_path / "zstd"
    dest.mkdir()
    stats = unpack_layer(io.BytesIO(zstandard.ZstdCompressor().compress(tar)), dest,
                         media_type="application/vnd.oci.image.layer.v1.tar+zstd")
    assert (dest / "a").read_bytes() == b"plain"
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


def test_limits(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(UnsafeLayer, match="entries"):
        unpack_layer(io.BytesIO(layer(*(entry(f"f{i}") for i in range(5)))), dest, max_entries=3)
    with pytest.raises(UnsafeLayer, match="bytes"):
        unpack_layer(io.BytesIO(layer(entry("big", data=b"x" * 1000))), dest, max_bytes=10)


def test_rootfs_unmount_handles_same_filesystem_bind_mounts(tmp_path: Path) -> None:
    from cri.image.rootfs import unmount

    src, target = tmp_path / "src", tmp_path / "target"
    src.mkdir()
    target.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
    assert str(target) in Path("/proc/self/mountinfo").read_text()
    unmount(target)
    assert str(target) not in Path("/proc/self/mountinfo").read_text()
    unmount(target)  # idempotent
    unmount(tmp_path / "missing")
