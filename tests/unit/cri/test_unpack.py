"""Layer unpacking: the tar breakout corpus is refused with nothing written outside the layer;
whiteouts, metadata and compression come out as overlayfs expects."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cri.image import unpack
from cri.image.unpack import OPAQUE_XATTR, LayerTooLarge, UnsafeLayer, unpack_image_layer, unpack_layer

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
    # the same directory resolved again after a symlink replaced it (no stale lookup)
    "symlink-replaces-dir": [d("a"), entry("a/x"), sym("a", "/etc"), entry("a/evil")],
    "symlink-replaces-parent": [d("a/b"), entry("a/b/x"), sym("a", "/"), entry("a/b/evil")],
    "hardlink-abs": [hard("pw", "/etc/passwd")],
    "hardlink-dotdot": [hard("pw", "../outside-target")],
    "hardlink-via-symlink": [sym("etc", "/etc"), hard("pw", "etc/passwd")],
    "hardlink-missing": [hard("pw", "nope")],
    "hardlink-via-symlinked-dir": [d("etc"), entry("etc/passwd", data=b"in"), sym("l", "etc"),
                                   hard("pw", "l/passwd")],
    "hardlink-via-abs-symlinked-dir": [sym("localetc", "/etc"), hard("pw", "/localetc/passwd")],
    "hardlink-to-dir": [d("dir"), hard("pw", "dir")],
    "hardlink-to-root": [hard("pw", "/")],
    "symlink-up-and-out": [d("dummy"), sym("localetc", "/dummy/../etc"),
                           entry("/localetc/evil", data=b"x")],
    "symlink-multiple-relative": [d("dummy"), sym("dummy/etc", "/etc"),
                                  sym("localetc", "./dummy/etc"), entry("localetc/evil")],
    "whiteout-root": [entry(".wh..")],
    "whiteout-empty": [entry(".wh.")],
    "whiteout-dotdot-dir": [d("a"), entry("a/.wh..")],
    "whiteout-climbs": [entry("../.wh.outside-target")],
    "whiteout-under-symlink": [sym("a", "/etc"), entry("a/.wh.passwd")],
    "opaque-under-symlink": [sym("a", "/etc"), entry("a/.wh..wh..opq")],
    "root-as-file": [entry("./", data=b"x")],
    "nul-in-linkpath": [entry("l", tarfile.SYMTYPE, mode=0o777,
                              pax_headers={"linkpath": "a\x00b"})],
    "huge-pax-header": [entry("f", pax_headers={"comment": "x" * (2 << 20)})],
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
    assert not Path("/etc/.wh..wh..opq").exists()
    assert OPAQUE_XATTR not in os.listxattr("/etc")


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


def test_replaced_directory_metadata_never_follows_a_symlink(tmp_path: Path) -> None:
    # A directory entry, then a symlink of the same name to a host directory: the deferred
    # chmod/chown/utime of the directory must not land on the host directory.
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    before = os.stat(victim)
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(io.BytesIO(layer(d("x", mode=0o777), d("x/sub", mode=0o777),
                                  sym("x", str(victim)))), dest)
    after = os.stat(victim)
    assert (after.st_mode, after.st_uid, after.st_mtime) == \
        (before.st_mode, before.st_uid, before.st_mtime)
    assert os.readlink(dest / "x") == str(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer", "victim"]


def test_hardlink_to_symlink_links_the_symlink_itself(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    nlink = os.stat("/etc/passwd").st_nlink
    unpack_layer(io.BytesIO(layer(sym("passwdlink", "/etc/passwd"),
                                  hard("localpasswd", "/passwdlink"))), dest)
    st = os.lstat(dest / "localpasswd")
    assert stat.S_ISLNK(st.st_mode) and st.st_ino == os.lstat(dest / "passwdlink").st_ino
    assert os.stat("/etc/passwd").st_nlink == nlink


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(io.BytesIO(layer(
        entry("a", data=b"file"), d("a", mode=0o750),                       # file -> dir
        d("b"), entry("b/child", data=b"c"), entry("b", data=b"file", mode=0o640),  # dir -> file
        d("c", mode=0o700), d("c", mode=0o711),                            # last dir header wins
    )), dest)
    assert stat.S_IMODE(os.stat(dest / "a").st_mode) == 0o750 and (dest / "a").is_dir()
    b = os.stat(dest / "b")
    assert stat.S_ISREG(b.st_mode) and stat.S_IMODE(b.st_mode) == 0o640
    assert (dest / "b").read_bytes() == b"file"
    assert stat.S_IMODE(os.stat(dest / "c").st_mode) == 0o711


def test_a_replaced_directory_is_not_written_through(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(io.BytesIO(layer(d("a/b"), entry("a/b/x", data=b"x"), entry("a", data=b"f"),
                                  entry("a2/y"), entry("a", tarfile.DIRTYPE, mode=0o755),
                                  entry("a/b/y", data=b"y"))), dest)
    assert sorted(os.listdir(dest / "a" / "b")) == ["y"]


def test_whiteout_details(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    stats = unpack_layer(io.BytesIO(layer(
        entry(".wh..wh..opq"),          # opaque root: accepted, as containerd does
        entry(".wh..wh.plnk"),          # aufs metadata: skipped
        d("dir"), entry("dir/x", data=b"x"), entry("dir/.wh.x"),  # whiteout replaces a file
        entry("deep/er/.wh.gone"),      # parents made as needed
    )), dest)
    assert stats.entries == 6
    assert os.getxattr(dest, OPAQUE_XATTR) == b"y"
    assert not (dest / ".wh.plnk").exists() and not (dest / ".wh..wh.plnk").exists()
    for wh in (dest / "dir" / "x", dest / "deep" / "er" / "gone"):
        st = os.lstat(wh)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert sorted(os.listdir(dest)) == ["deep", "dir"]


def test_capability_xattr_survives_chown(tmp_path: Path) -> None:
    # vfs_cap_data v2, effective, cap_net_bind_service (10) permitted: binary, not UTF-8.
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    dest = tmp_path / "layer"
    dest.mkdir()
    raw = cap.decode("utf-8", "surrogateescape")
    unpack_layer(io.BytesIO(layer(entry("ping", data=b"\x7fELF", mode=0o755, uid=0, gid=0,
                                        pax_headers={"SCHILY.xattr.security.capability": raw}))),
                 dest)
    assert os.getxattr(dest / "ping", "security.capability") == cap


def test_compression_is_told_by_magic_and_stats(tmp_path: Path) -> None:
    tar = layer(d("etc"), entry("etc/a", data=b"12345"), entry("b", data=b"678"))
    sha = "sha256:" + hashlib.sha256(tar).hexdigest()
    cases = {
        "docker-gzip": (gzip.compress(tar), "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "plain-labelled-gzip": (tar, "application/vnd.oci.image.layer.v1.tar+gzip"),
        "gzip-unlabelled": (gzip.compress(tar), ""),
        "multi-member-gzip": (gzip.compress(tar[:700]) + gzip.compress(tar[700:]), ""),
        "zero-padded-gzip": (gzip.compress(tar[:700]) + b"\0" * 3000 + gzip.compress(tar[700:])
                             + b"\0" * 512, ""),
        "gzip-with-name-and-extra": (_gzip_with_header_fields(tar), ""),
    }
    zstandard = None
    with contextlib.suppress(ImportError):
        import zstandard  # type: ignore[import-not-found,unused-ignore,no-redef]
    if zstandard is not None:
        c = zstandard.ZstdCompressor()
        cases["zstd-multi-frame"] = (c.compress(tar[:1000]) + c.compress(tar[1000:]),
                                     "application/vnd.oci.image.layer.v1.tar+zstd")
    for name, (blob, media_type) in cases.items():
        dest = tmp_path / name
        dest.mkdir()
        stats = unpack_layer(io.BytesIO(blob), dest, media_type=media_type)
        assert (dest / "etc" / "a").read_bytes() == b"12345", name
        assert (stats.diff_id, stats.tar_bytes, stats.entries, stats.bytes_written) == \
            (sha, len(tar), 3, 8), name


def _gzip_with_header_fields(data: bytes) -> bytes:
    """A gzip member with FEXTRA, FNAME and FCOMMENT set (zlib has to skip them)."""
    body = gzip.compress(data)[10:]  # deflate data, CRC32 and ISIZE
    extra = b"AB\x02\x00hi"
    return (b"\x1f\x8b\x08\x1c" + b"\0" * 4 + b"\x00\x03" + len(extra).to_bytes(2, "little")
            + extra + b"layer.tar\0" + b"a comment\0" + body)


def _bad_crc(blob: bytes) -> bytes:
    return blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:-4]) + blob[-4:]


_GOOD = gzip.compress(layer(entry("a", data=b"x" * 5000)))


@pytest.mark.parametrize("blob", [b"\x1f\x8b" + b"not gzip" * 100,
                                  b"\x28\xb5\x2f\xfd" + b"not zstd" * 100, b"",
                                  _GOOD[:-20], _bad_crc(_GOOD), _GOOD + b"trailing garbage"],
                         ids=["gzip", "zstd", "empty", "truncated-gzip", "gzip-crc",
                              "gzip-garbage-after"])
def test_corrupt_streams_are_unsafe_layers(tmp_path: Path, blob: bytes) -> None:
    if blob.startswith(b"\x28\xb5"):
        pytest.importorskip("zstandard")
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(UnsafeLayer):
        unpack_layer(io.BytesIO(blob), dest)


def test_a_large_file_spanning_many_reads_is_exact(tmp_path: Path) -> None:
    data = os.urandom(5 << 20) + b"end"  # several of the unpacker's 1 MiB reads, and a remainder
    tar = layer(d("data"), entry("data/blob", data=data), entry("after", data=b"tail"))
    for name, blob in {"gzip": gzip.compress(tar, 1), "plain": tar}.items():
        dest = tmp_path / name
        dest.mkdir()
        stats = unpack_layer(io.BytesIO(blob), dest)
        assert (dest / "data" / "blob").read_bytes() == data, name
        assert (dest / "after").read_bytes() == b"tail", name
        assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest(), name


def test_byte_limit_is_checked_before_writing(tmp_path: Path) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(UnsafeLayer, match=r"'big'.*more than 10 bytes"):
        unpack_layer(io.BytesIO(layer(entry("big", data=b"x" * 1000))), dest, max_bytes=10)
    assert not (dest / "big").exists()


def test_image_layers_are_unpacked_within_the_module_limits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unpack_image_layer is what pulls and imports call: it reads the limits when called.
    many = layer(*(entry(f"f{i}", data=b"y") for i in range(5)))
    big = layer(entry("big", data=b"x" * 1000))
    for name, blob in (("ok-many", many), ("ok-big", big)):  # the defaults let both through
        (tmp_path / name).mkdir()
        unpack_image_layer(io.BytesIO(blob), tmp_path / name)
    assert (tmp_path / "ok-big" / "big").stat().st_size == 1000
    monkeypatch.setattr(unpack, "MAX_LAYER_ENTRIES", 4)
    (tmp_path / "many").mkdir()
    with pytest.raises(LayerTooLarge, match="more than 4 entries"):
        unpack_image_layer(io.BytesIO(many), tmp_path / "many")
    monkeypatch.setattr(unpack, "MAX_LAYER_BYTES", 999)
    (tmp_path / "big").mkdir()
    with pytest.raises(LayerTooLarge, match=r"'big'.*more than 999 bytes"):
        unpack_image_layer(io.BytesIO(big), tmp_path / "big")
    assert not (tmp_path / "big" / "big").exists()


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_files_are_unpacked_exactly(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sparse").open("wb") as f:
        f.write(b"start")
        f.seek(2 << 20)
        f.write(b"middle")
        f.truncate(5 << 20)  # a hole at the end too
    tar = subprocess.run(["tar", "-c", "-S", f"--format={fmt}", "-C", str(src), "sparse"],
                         capture_output=True, check=True).stdout
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack_layer(io.BytesIO(gzip.compress(tar)), dest)
    assert (dest / "sparse").read_bytes() == (src / "sparse").read_bytes()
