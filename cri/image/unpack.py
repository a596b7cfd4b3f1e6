"""Unpack one image layer into an empty directory that becomes an overlay lowerdir - safely.

No entry may leave the layer directory (the containerd tar breakout vectors, CVE-2021-32760):
- names are cleaned; an absolute name is taken relative to the layer root (as Docker and
  containerd do) and a name that climbs above it with '..' is refused;
- every parent directory is opened component by component with O_NOFOLLOW from the layer
  root's fd, so a symlink in a parent position (``a -> /etc`` then ``a/passwd``) is refused
  rather than followed, and nothing is ever resolved against the host's '/';
- a hardlink's target is looked up the same way, so it cannot name a file outside the layer;
- symlinks are created as given and never followed while unpacking (their targets mean
  something only inside the container's root).

Whiteouts become what overlayfs understands: ``.wh.name`` a 0:0 character device ``name``,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its directory. A whiteout of the layer
root itself (``.wh..``, or an opaque marker at the root that would hide every lower layer) is
refused. A refused layer raises UnsafeLayer; the caller removes the directory.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO
from zlib import error as zlib_error

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# PAX xattrs a layer may carry; trusted.* (overlay's own namespace) and others are ignored.
ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeLayer(ValueError):
    """The layer breaks a rule; the message names the entry and the rule."""


@dataclass(frozen=True)
class LayerStats:
    diff_id: str  # sha256 of the uncompressed tar: must equal the config's rootfs.diff_ids[i]
    tar_bytes: int
    entries: int


class _HashingReader:
    """Counts and hashes what tarfile reads from the uncompressed stream."""

    def __init__(self, raw: io.BufferedIOBase | IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        # tar streams end with zero blocks tarfile may not read; the diff_id covers them.
        while self.read(CHUNK):
            pass


class _Peekable(io.RawIOBase):
    """The stream with its first bytes looked at (to tell the compression) but not consumed."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.head = raw.read(4)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        if self.head:
            n = min(len(self.head), len(view))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.raw.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(stream: BinaryIO, media_type: str) -> io.BufferedIOBase | IO[bytes]:
    raw = _Peekable(stream)
    head = raw.head
    peek = io.BufferedReader(raw, CHUNK)
    if head.startswith(GZIP_MAGIC) or media_type.endswith(("gzip", "+gzip")):
        return gzip.GzipFile(fileobj=peek, mode="rb")
    if head.startswith(ZSTD_MAGIC) or media_type.endswith("+zstd"):
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise UnsafeLayer("zstd layer, but the zstandard package is not installed") from exc
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(peek)
        return reader
    return peek


def clean_name(name: str) -> str:
    """The entry's path relative to the layer root; UnsafeLayer if it leaves the root."""
    if "\x00" in name:
        raise UnsafeLayer(f"entry {name!r}: NUL in name")
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    # normpath of an absolute path cannot climb above '/', so climbing shows as a difference
    # between the raw '..' count and what survived: check the raw relative form too.
    rel = posixpath.normpath(name.lstrip("/")) if name.lstrip("/") else "."
    if rel == ".." or rel.startswith("../"):
        raise UnsafeLayer(f"entry {name!r} climbs out of the layer")
    return cleaned or "."


class _Tree:
    """Operations inside the layer root, always relative to directory fds."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.root_fd)

    @contextlib.contextmanager
    def parent(self, rel: str, create: bool = True) -> Iterator[tuple[int, str]]:
        """An fd of ``rel``'s parent directory (made if missing) and ``rel``'s last component.
        A parent component that is a symlink or not a directory is refused."""
        parts = rel.split("/")
        fd = os.dup(self.root_fd)
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeLayer(
                            f"entry {rel!r}: parent {part!r} is a symlink or not a directory"
                        ) from exc
                    raise
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    @staticmethod
    def remove(fd: int, name: str) -> None:
        """Remove whatever ``name`` is (a later entry replaces an earlier one)."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(f"/proc/self/fd/{fd}/{name}")
        else:
            os.unlink(name, dir_fd=fd)


def _apply_meta(fd: int, name: str, m: tarfile.TarInfo, *, is_link: bool) -> None:
    os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
    if not is_link:
        # After chown, which clears setuid/setgid bits.
        os.chmod(f"/proc/self/fd/{fd}/{name}", m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            attr = key[len("SCHILY.xattr."):]
            if attr.startswith(ALLOWED_XATTR_PREFIXES):
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(f"/proc/self/fd/{fd}/{name}", attr, raw, follow_symlinks=False)
    os.utime(name, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)


def _whiteout(tree: _Tree, rel: str, base: str) -> None:
    if base == OPAQUE_MARKER:
        dir_rel = posixpath.dirname(rel)
        if not dir_rel:
            raise UnsafeLayer(f"entry {rel!r}: an opaque whiteout of the layer root is refused")
        with tree.parent(dir_rel + "/x") as (fd, _):
            os.setxattr(f"/proc/self/fd/{fd}", OPAQUE_XATTR, b"y")
        return
    target = base[len(WHITEOUT_PREFIX):]
    if target in ("", ".", "..") or "/" in target:
        raise UnsafeLayer(f"entry {rel!r}: whiteout of {target!r} is refused")
    with tree.parent(posixpath.join(posixpath.dirname(rel), target)) as (fd, name):
        tree.remove(fd, name)
        os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)


def _entry(tree: _Tree, tar: tarfile.TarFile, m: tarfile.TarInfo,
           dir_meta: list[tuple[str, tarfile.TarInfo]]) -> int:
    rel = clean_name(m.name)
    base = posixpath.basename(rel)
    if base.startswith(WHITEOUT_PREFIX):
        _whiteout(tree, rel, base)
        return 0
    if rel == ".":
        if m.isdir():
            dir_meta.append((".", m))
            return 0
        raise UnsafeLayer(f"entry {m.name!r}: only a directory may stand for the layer root")
    with tree.parent(rel) as (fd, name):
        if m.isdir():
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    tree.remove(fd, name)
                    os.mkdir(name, 0o700, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
            dir_meta.append((rel, m))  # modes and times once its children are in
            return 0
        tree.remove(fd, name)
        if m.isreg():
            src = tar.extractfile(m)
            assert src is not None
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=fd)
            written = 0
            with os.fdopen(out, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    written += len(chunk)
            _apply_meta(fd, name, m, is_link=False)
            return written
        if m.issym():
            os.symlink(m.linkname, name, dir_fd=fd)
            _apply_meta(fd, name, m, is_link=True)
            return 0
        if m.islnk():
            target = clean_name(m.linkname)
            if target == ".":
                raise UnsafeLayer(f"entry {m.name!r}: hardlink to the layer root")
            try:
                with tree.parent(target, create=False) as (tfd, tname):
                    os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise UnsafeLayer(
                    f"entry {m.name!r}: hardlink target {m.linkname!r} is not in this layer"
                ) from exc
            return 0
        if m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(name, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor),
                     dir_fd=fd)
            _apply_meta(fd, name, m, is_link=False)
            return 0
        raise UnsafeLayer(f"entry {m.name!r}: unsupported tar entry type {m.type!r}")


def unpack_layer(stream: BinaryIO, dest: Path, *, media_type: str = "",
                 max_entries: int | None = None, max_bytes: int | None = None) -> LayerStats:
    """Unpack a (gzip, zstd or plain) tar layer into the empty directory ``dest``."""
    reader = _HashingReader(_decompressed(stream, media_type))
    tree = _Tree(dest)
    dir_meta: list[tuple[str, tarfile.TarInfo]] = []
    entries = written = 0
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    entries += 1
                    if max_entries is not None and entries > max_entries:
                        raise UnsafeLayer(f"layer has more than {max_entries} entries")
                    try:
                        written += _entry(tree, tar, member, dir_meta)
                    except OSError as exc:
                        raise UnsafeLayer(f"entry {member.name!r}: {exc}") from exc
                    if max_bytes is not None and written > max_bytes:
                        raise UnsafeLayer(f"layer unpacks to more than {max_bytes} bytes")
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error) as exc:
            raise UnsafeLayer(f"layer is not a readable tar stream: {exc}") from exc
        reader.drain()
        # Deepest directories first, so setting a parent's mtime is the last touch it gets.
        for rel, m in sorted(dir_meta, key=lambda x: x[0].count("/"), reverse=True):
            if rel == ".":
                os.fchown(tree.root_fd, m.uid, m.gid)
                os.fchmod(tree.root_fd, m.mode & 0o7777)
                os.utime(tree.root_fd, (m.mtime, m.mtime))
                continue
            with tree.parent(rel, create=False) as (fd, name):
                _apply_meta(fd, name, m, is_link=False)
    finally:
        tree.close()
    return LayerStats(f"sha256:{reader.sha.hexdigest()}", reader.size, entries)
