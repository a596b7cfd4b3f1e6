"""Unpack one image layer into an empty directory that becomes an overlay lowerdir - safely.

No entry may leave the layer directory (the containerd tar breakout vectors, CVE-2021-32760):
- names are cleaned; an absolute name is taken relative to the layer root (as Docker and
  containerd do: ``/etc/x`` lands in ``<layer>/etc/x``) and a name that climbs above the root
  with '..' is refused;
- every parent directory is opened component by component with O_NOFOLLOW from the layer
  root's fd, so a symlink in a parent position (``a -> /etc`` then ``a/passwd``) is refused
  rather than followed - even one pointing inside the layer (containerd follows such links
  scoped to the root; a tar made from a real tree never has entries below its own symlinks, so
  refusing costs no real image and leaves no resolution logic to get wrong);
- a hardlink's target is cleaned and looked up the same way: it must already exist in this
  layer, is never reached through a symlink, and a symlink as target is linked as the symlink
  itself (linkat without AT_SYMLINK_FOLLOW), never the file it names;
- symlinks are created as given and never followed while unpacking (their targets mean
  something only inside the container's root);
- metadata is applied through fds opened with O_NOFOLLOW (or *at calls that do not follow),
  including the deferred pass that sets directory modes/times after their children, so an entry
  replaced later by a symlink cannot redirect a chmod/chown to the host.

Devices: character and block devices and fifos are created as the tar says (the runtime is
root, as containerd's is); they can only be created inside the layer like any other entry.

Whiteouts become what overlayfs understands: ``.wh.name`` a 0:0 character device ``name``,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its directory. A whiteout naming the
root itself (``.wh..``, ``.wh.``) is refused. An opaque marker at the layer root is accepted and
sets the xattr on the root, as containerd does (overlayfs ignores it on a layer root). Other
``.wh..wh.*`` names are aufs metadata and are skipped, as Docker does.

A refused layer raises UnsafeLayer (naming the entry and the rule); the caller removes ``dest``.
One that is merely too big for the limits raises its subclass LayerTooLarge.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from cri.image.inflate import CorruptStream, Read, decompressed
from cri.image.stages import NULL_CLOCK, StageClock
from cri.image.tar_stream import TarStream

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# PAX xattrs a layer may carry; trusted.* (overlay's own namespace) and the rest are ignored.
ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")
CHUNK = 1 << 20  # what one read of a layer stream asks for
# A PAX or GNU long-name record is read whole into memory by tarfile: cap it (as Go's
# archive/tar does) so a layer cannot exhaust memory with one header.
MAX_META_HEADER = 1 << 20
# What one layer may unpack to when pulled or imported (unpack_image_layer). The uncompressed
# size is not known before unpacking (a descriptor gives only the compressed size, and gzip
# reaches ratios above 1000:1), so a layer is stopped once it crosses these while being
# written. Far above real images (the largest common ones are a few GiB in a few 100k files);
# they only stop a decompression bomb from filling the image store's filesystem. Read at call
# time, so they can be changed (or patched in tests) at run time.
MAX_LAYER_BYTES = 10 << 30  # regular-file bytes written
MAX_LAYER_ENTRIES = 1_000_000  # tar members (each costs an inode, or metadata work)
# Errors that say nothing about the layer: they are raised as they are, not as UnsafeLayer.
_HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL: never opens what is there already, a symlink included (the entry is replaced first).
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_META_TYPES = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})


class UnsafeLayer(ValueError):
    """The layer breaks a rule; the message names the entry and the rule."""


class LayerTooLarge(UnsafeLayer):
    """The layer unpacks to more bytes or entries than the caller allows."""


@dataclass(frozen=True)
class LayerStats:
    diff_id: str  # sha256 of the uncompressed tar: must equal the config's rootfs.diff_ids[i]
    tar_bytes: int  # size of the uncompressed tar stream
    entries: int  # tar members (whiteouts included)
    bytes_written: int = 0  # regular-file content written into the layer directory


class CappedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized PAX / GNU long-name records before tarfile reads them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _META_TYPES and self.size > MAX_META_HEADER:
            raise UnsafeLayer(f"entry {self.name!r}: {self.size}-byte metadata header "
                              f"(more than {MAX_META_HEADER})")
        # A private tarfile hook (absent from typeshed), stable since Python 2.
        proc: Callable[[tarfile.TarFile], tarfile.TarInfo] = super()._proc_member  # type: ignore[misc]
        return proc(tarfile_)


def clean_name(name: str) -> str:
    """The entry's path relative to the layer root ('.' for the root); UnsafeLayer if it
    climbs out. A leading '/' is dropped: absolute names are relative to the layer root."""
    if "\x00" in name:
        raise UnsafeLayer(f"entry {name!r}: NUL in name")
    rel = name.lstrip("/")
    cleaned = posixpath.normpath(rel) if rel else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise UnsafeLayer(f"entry {name!r}: climbs out of the layer with '..'")
    return cleaned


def _xattrs(m: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            attr = key[len("SCHILY.xattr."):]
            if attr.startswith(ALLOWED_XATTR_PREFIXES):
                # tarfile decoded the value with surrogateescape: this gives the bytes back.
                out.append((attr, value.encode("utf-8", "surrogateescape")))
    return out


def _fd_meta(fd: int, m: tarfile.TarInfo, owner: tuple[int, int] | None = None) -> None:
    """Owner, mode, xattrs and times of an open file or directory (nothing to follow).
    ``owner`` is who made ``fd`` (the unpacker's uid and gid): no chown to that."""
    if (m.uid, m.gid) != owner:
        os.fchown(fd, m.uid, m.gid)
    os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid and capabilities
    for attr, raw in _xattrs(m):
        os.setxattr(fd, attr, raw)
    os.utime(fd, (m.mtime, m.mtime))


class _Tree:
    """Operations inside the layer root, always relative to directory fds."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        # The last directory resolved (tar members come grouped by directory): later lookups
        # of it or below it start from its fd. Dropped whenever a directory is removed.
        self._cached: tuple[str, int] | None = None

    def close(self) -> None:
        self.forget_cache()
        os.close(self.root_fd)

    def forget_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def open_dir(self, rel: str, *, create: bool, what: str, path: str = "") -> int:
        """An fd (the caller closes it) of the directory ``rel`` ('.' is the root), made 0755
        where missing if ``create``. A component that is a symlink or not a directory is
        refused; a missing one without ``create`` raises FileNotFoundError. ``what`` (the tar
        entry) and ``path`` (what is being resolved, if not ``rel``) go into the message."""
        parts = [] if rel == "." else rel.split("/")
        start = 0
        fd = self.root_fd
        if self._cached is not None:
            cached_rel, cached_fd = self._cached
            if rel == cached_rel:
                return os.dup(cached_fd)
            if rel.startswith(cached_rel + "/"):
                start, fd = cached_rel.count("/") + 1, cached_fd
        fd = os.dup(fd)
        try:
            for i in range(start, len(parts)):
                part = parts[i]
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
                            f"entry {what!r}: {'/'.join(parts[:i + 1])!r} in {path or rel!r} is "
                            "a symlink or not a directory (no path is resolved through a "
                            "symlink while unpacking)") from exc
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        if parts:
            self.forget_cache()
            self._cached = (rel, os.dup(fd))
        return fd

    def parent(self, rel: str, *, create: bool, what: str) -> tuple[int, str]:
        """An fd of ``rel``'s parent directory (the caller closes it) and ``rel``'s last name."""
        head, _, name = rel.rpartition("/")
        return self.open_dir(head or ".", create=create, what=what, path=rel), name

    def remove(self, fd: int, name: str) -> bool:
        """Remove whatever ``name`` is (a later entry replaces an earlier one); True if it was
        a directory."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            # rmtree works with fds and does not follow symlinks below it; the final component
            # of this /proc path is a real directory we just lstat'ed.
            self.forget_cache()  # it may be, or lie below, the removed directory
            shutil.rmtree(f"/proc/self/fd/{fd}/{name}")
            return True
        os.unlink(name, dir_fd=fd)
        return False


class _Unpacker:
    def __init__(self, tree: _Tree, max_bytes: int | None) -> None:
        self.tree = tree
        self.max_bytes = max_bytes
        self.written = 0
        self.owner = (os.geteuid(), os.getegid())  # what new entries belong to already
        # Directory metadata, applied once all entries are in (children change mtimes).
        self.dir_meta: dict[str, tarfile.TarInfo] = {}

    def _forget(self, rel: str) -> None:
        """``rel`` (a directory) was replaced: its metadata and its children's are void."""
        prefix = rel + "/"
        for key in [k for k in self.dir_meta if k == rel or k.startswith(prefix)]:
            del self.dir_meta[key]

    def _replace(self, fd: int, name: str, rel: str) -> None:
        if self.tree.remove(fd, name):
            self._forget(rel)

    def entry(self, tar: TarStream, m: tarfile.TarInfo) -> None:
        rel = clean_name(m.name)
        base = posixpath.basename(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(m, rel, base)
            return
        if rel == ".":
            if not m.isdir():
                raise UnsafeLayer(f"entry {m.name!r}: only a directory may stand for the root")
            self.dir_meta["."] = m
            return
        fd, name = self.tree.parent(rel, create=True, what=m.name)
        try:
            self._create(tar, m, rel, fd, name)
        finally:
            os.close(fd)

    def _create(self, tar: TarStream, m: tarfile.TarInfo, rel: str, fd: int,
                name: str) -> None:
        if m.isdir():
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=fd)
                    os.mkdir(name, 0o700, dir_fd=fd)
            self.dir_meta[rel] = m  # the last header for a directory wins
            return
        if m.islnk():
            self._hardlink(m, fd, name, rel)
            return
        if m.isreg():
            self._file(tar, m, rel, fd, name)
            return
        self._replace(fd, name, rel)
        if m.issym():
            os.symlink(m.linkname, name, dir_fd=fd)
            os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
            # No xattrs: Linux allows neither user.* nor capabilities on symlinks.
            os.utime(name, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)
            return
        if m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=fd)
            # Just made by mknod, so not a symlink: the *at calls below act on it.
            os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, m.mode & 0o7777, dir_fd=fd)
            for attr, raw in _xattrs(m):
                os.setxattr(f"/proc/self/fd/{fd}/{name}", attr, raw, follow_symlinks=False)
            os.utime(name, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)
            return
        raise UnsafeLayer(f"entry {m.name!r}: unsupported tar entry type {m.type!r}")

    def _file(self, tar: TarStream, m: tarfile.TarInfo, rel: str, fd: int, name: str) -> None:
        if self.max_bytes is not None and self.written + m.size > self.max_bytes:
            raise LayerTooLarge(f"entry {m.name!r}: layer unpacks to more than "
                                f"{self.max_bytes} bytes")
        try:
            out = os.open(name, _NEW_FILE, 0o600, dir_fd=fd)
        except FileExistsError:  # a later entry replaces an earlier one
            self._replace(fd, name, rel)
            out = os.open(name, _NEW_FILE, 0o600, dir_fd=fd)
        try:
            # tarfile's sparse map (typeshed types it as an int): (offset, size) pieces.
            sparse = cast("list[tuple[int, int]] | None", m.sparse)
            if sparse is None:
                self._copy(tar, m.size, out)
            else:  # the data holds the non-hole pieces in order; the holes stay unwritten
                for offset, size in sparse:
                    os.lseek(out, offset, os.SEEK_SET)
                    self._copy(tar, size, out)
                os.ftruncate(out, m.size)
            _fd_meta(out, m, self.owner)
        finally:
            os.close(out)

    def _copy(self, tar: TarStream, n: int, out: int) -> None:
        """``n`` bytes of the member's data into ``out``, straight from the decompressor's
        chunks (os.write of views: no copy in Python, the GIL let go while the kernel copies)."""
        for view in tar.data(n):
            while view:
                view = view[os.write(out, view):]
        self.written += n

    def _hardlink(self, m: tarfile.TarInfo, fd: int, name: str, rel: str) -> None:
        try:
            target = clean_name(m.linkname)
        except UnsafeLayer as exc:
            raise UnsafeLayer(f"entry {m.name!r}: hardlink target {m.linkname!r} is outside "
                              "the layer") from exc
        if target == ".":
            raise UnsafeLayer(f"entry {m.name!r}: hardlink to the layer root")
        if target == rel:
            raise UnsafeLayer(f"entry {m.name!r}: hardlink to itself")
        try:
            tfd, tname = self.tree.parent(target, create=False, what=m.name)
        except FileNotFoundError as exc:
            raise UnsafeLayer(f"entry {m.name!r}: hardlink target {m.linkname!r} is not in "
                              "this layer") from exc
        try:
            try:
                st = os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise UnsafeLayer(f"entry {m.name!r}: hardlink target {m.linkname!r} is not "
                                  "in this layer") from exc
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(f"entry {m.name!r}: hardlink to directory {m.linkname!r}")
            self._replace(fd, name, rel)
            # No AT_SYMLINK_FOLLOW: a symlink target is linked as the symlink itself.
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def whiteout(self, m: tarfile.TarInfo, rel: str, base: str) -> None:
        dir_rel = posixpath.dirname(rel) or "."
        if base == OPAQUE_MARKER:
            dfd = self.tree.open_dir(dir_rel, create=True, what=m.name, path=rel)
            try:
                os.setxattr(dfd, OPAQUE_XATTR, b"y")
            finally:
                os.close(dfd)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not a whiteout
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise UnsafeLayer(f"entry {m.name!r}: whiteout of {target!r} is refused")
        fd = self.tree.open_dir(dir_rel, create=True, what=m.name, path=rel)
        try:
            self._replace(fd, target, posixpath.join(dir_rel, target).removeprefix("./"))
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=fd)
        finally:
            os.close(fd)

    def finish_dirs(self) -> None:
        # Deepest first, so a parent's mtime is the last thing to touch it.
        for rel in sorted(self.dir_meta, key=lambda r: -1 if r == "." else r.count("/"),
                          reverse=True):
            try:
                dfd = self.tree.open_dir(rel, create=False, what=rel)
            except FileNotFoundError:
                continue
            try:
                _fd_meta(dfd, self.dir_meta[rel])
            finally:
                os.close(dfd)


def _label(media_type: str) -> str:
    return f" ({media_type})" if media_type else ""


def unpack_layer(stream: BinaryIO, dest: Path, *, media_type: str = "",
                 max_entries: int | None = None, max_bytes: int | None = None) -> LayerStats:
    """Unpack a (gzip, zstd or plain) tar layer into the empty directory ``dest``.

    The compression is told by magic bytes; ``media_type`` only labels errors. ``max_entries``
    caps tar members, ``max_bytes`` the regular-file bytes written. Raises UnsafeLayer for a
    layer that breaks a rule or cannot be read; the caller removes ``dest`` then.
    """
    return unpack_stream(lambda: stream.read(CHUNK), dest, media_type=media_type,
                         max_entries=max_entries, max_bytes=max_bytes)


def _hashed(chunks: Iterator[bytes], sha: hashlib._Hash, clock: StageClock,
            counted: list[int]) -> Iterator[bytes]:
    """The decompressed chunks, hashed and counted (the diff_id covers every byte, the zero
    blocks after the end of the archive included)."""
    while True:
        clock.enter("inflate")
        try:
            chunk = next(chunks, None)
        finally:
            clock.leave()
        if chunk is None:
            return
        clock.enter("hash_tar")
        sha.update(chunk)
        clock.leave()
        counted[0] += len(chunk)
        yield chunk


def unpack_stream(read: Read, dest: Path, *, media_type: str = "",
                  max_entries: int | None = None, max_bytes: int | None = None,
                  clock: StageClock = NULL_CLOCK) -> LayerStats:
    """unpack_layer from ``read``, which gives the next piece of the layer blob (b"" at its
    end) in whatever sizes it has them. Errors ``read`` raises go through as they are."""
    sha = hashlib.sha256()
    counted = [0]
    tree = _Tree(dest)
    unpacker = _Unpacker(tree, max_bytes)
    entries = 0
    try:
        try:
            chunks = _hashed(decompressed(read), sha, clock, counted)
            tar = TarStream(chunks, CappedTarInfo)
            while True:
                clock.enter("tar")
                try:
                    member = tar.next()
                finally:
                    clock.leave()
                if member is None:
                    break
                entries += 1
                if max_entries is not None and entries > max_entries:
                    raise LayerTooLarge(f"layer has more than {max_entries} entries")
                clock.enter("write")
                try:
                    unpacker.entry(tar, member)
                except UnsafeLayer:
                    raise
                except OSError as exc:
                    if exc.errno in _HOST_ERRNOS:
                        raise
                    raise UnsafeLayer(f"entry {member.name!r}: {exc}") from exc
                except ValueError as exc:  # e.g. a NUL inside a PAX linkpath
                    raise UnsafeLayer(f"entry {member.name!r}: invalid name or link "
                                      f"target ({exc})") from exc
                finally:
                    clock.leave()
            for _ in chunks:  # tar streams end with zero blocks the reader may not reach
                pass
        except UnsafeLayer:
            raise
        except (tarfile.TarError, CorruptStream) as exc:
            raise UnsafeLayer(f"layer{_label(media_type)} is not a readable tar stream: "
                              f"{exc}") from exc
        clock.enter("write")
        unpacker.finish_dirs()
        clock.leave()
    finally:
        tree.close()
    return LayerStats(f"sha256:{sha.hexdigest()}", counted[0], entries, unpacker.written)


def unpack_image_layer(stream: BinaryIO, dest: Path, *, media_type: str = "") -> LayerStats:
    """unpack_layer with the image store's limits, MAX_LAYER_ENTRIES and MAX_LAYER_BYTES: what
    pulls and imports use. LayerTooLarge when a layer crosses them."""
    return unpack_image_stream(lambda: stream.read(CHUNK), dest, media_type=media_type)


def unpack_image_stream(read: Read, dest: Path, *, media_type: str = "",
                        clock: StageClock = NULL_CLOCK) -> LayerStats:
    """unpack_stream with the image store's limits (read when called)."""
    return unpack_stream(read, dest, media_type=media_type, max_entries=MAX_LAYER_ENTRIES,
                         max_bytes=MAX_LAYER_BYTES, clock=clock)
