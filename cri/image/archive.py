"""An image archive's members, read as streams and never extracted: a directory (an OCI layout
on disk) or a tar (of an OCI layout, or a docker-archive from ``docker save``; gzip or plain).

Nothing of the archive is written anywhere here: the importer reads manifests and configs
(capped) and hands layer streams to the safe unpacker, as a pull hands it a download. So an
import needs no tarfile extraction filters (PEP 706, Python >= 3.11.4, which Debian 12's 3.11.2
lacks), and no member can land outside a directory on its way in. Names are checked anyway, so
a crafted archive is refused with a clear message rather than read in part: a member or a
reference that is absolute or climbs out with '..' is refused, and a symlink or hardlink member
is followed only to another member of the same archive (in a directory: only to a file below
it).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from cri.image.unpack import CappedTarInfo, UnsafeLayer

# An archive's member headers are kept in memory to find members by name; an image has a few
# per layer, so this only stops a crafted archive from exhausting memory with empty entries.
MAX_MEMBERS = 100_000
MAX_LINK_HOPS = 16  # symlinks followed to reach one member (Linux allows 40 per path)


class ArchiveError(ValueError):
    """The archive cannot be read, or a member breaks a rule; the message names it."""


def clean_member(name: str) -> str:
    """``name`` relative to the archive's root ('.' for the root itself); ArchiveError if it is
    absolute or climbs out with '..'."""
    if "\x00" in name:
        raise ArchiveError(f"member {name!r}: NUL in name")
    if name.startswith("/"):
        raise ArchiveError(f"member {name!r}: absolute name")
    cleaned = posixpath.normpath(name) if name else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise ArchiveError(f"member {name!r}: climbs out of the archive with '..'")
    return cleaned


class Archive(Protocol):
    def has(self, name: str) -> bool:
        """Whether a regular file (or a link to one) of that name is in the archive."""

    def open(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The member's content as a stream."""

    def read(self, name: str, cap: int) -> bytes:
        """The member's content, refused when over ``cap`` bytes."""


def _read_capped(stream: BinaryIO, name: str, cap: int) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise ArchiveError(f"member {name!r} is over the {cap}-byte cap")
    return data


class DirArchive:
    """A directory: names resolve through the filesystem and must stay below it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        path = (self.root / clean_member(name)).resolve()
        if self.root not in path.parents:
            raise ArchiveError(f"member {name!r} leads out of {self.root} (through a symlink)")
        return path

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        path = self._path(name)
        if not path.is_file():  # checked first: opening a fifo would block
            raise ArchiveError(f"member {name!r} is not a regular file in {self.root}")
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ArchiveError(f"member {name!r} is not a regular file in {self.root}")
            yield f

    def read(self, name: str, cap: int) -> bytes:
        with self.open(name) as f:
            return _read_capped(f, name, cap)


class TarArchive:
    """A tar read in place (random access): members are found by their cleaned names and read
    through tarfile.extractfile; tarfile never writes a file."""

    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self.members: dict[str, tarfile.TarInfo] = {}
        count = 0
        while (member := tf.next()) is not None:
            count += 1
            if count > MAX_MEMBERS:
                raise ArchiveError(f"more than {MAX_MEMBERS} members")
            # A later member of the same name wins, as it would on extraction.
            self.members[clean_member(member.name)] = member

    def _member(self, name: str) -> tarfile.TarInfo | None:
        rel = clean_member(name)
        for _ in range(MAX_LINK_HOPS):
            member = self.members.get(rel)
            if member is None or member.isreg():
                return member
            if member.issym():
                target = posixpath.join(posixpath.dirname(rel), member.linkname)
            elif member.islnk():
                target = member.linkname  # hardlink targets are archive names
            else:
                raise ArchiveError(f"member {member.name!r} is not a regular file")
            try:
                rel = clean_member(target)
            except ArchiveError as exc:
                raise ArchiveError(f"member {member.name!r} links to {member.linkname!r}, "
                                   "outside the archive") from exc
        raise ArchiveError(f"member {name!r}: more than {MAX_LINK_HOPS} links to follow")

    def has(self, name: str) -> bool:
        return self._member(name) is not None

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        member = self._member(name)
        if member is None:
            raise ArchiveError(f"member {name!r} is not in the archive")
        stream = self.tf.extractfile(member)
        assert stream is not None  # a regular member always has a stream
        with stream:
            yield cast(BinaryIO, stream)  # an io.BufferedReader: typeshed says only IO[bytes]

    def read(self, name: str, cap: int) -> bytes:
        member = self._member(name)
        if member is not None and member.size > cap:  # refused before a byte is read
            raise ArchiveError(f"member {name!r} is {member.size} bytes, over the {cap} cap")
        with self.open(name) as f:
            return _read_capped(f, name, cap)


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[Archive]:
    """The archive at ``path``: a directory as it is, anything else as a tar."""
    if path.is_dir():
        yield DirArchive(path)
        return
    with contextlib.ExitStack() as stack:
        try:
            # Random access ("r:*": plain or compressed); the capped TarInfo refuses oversized
            # PAX and GNU long-name records, as the unpacker does.
            archive = TarArchive(stack.enter_context(tarfile.open(path, tarinfo=CappedTarInfo)))
        except (tarfile.TarError, UnsafeLayer, EOFError, OSError, zlib.error) as exc:
            raise ArchiveError(f"{path}: not a readable archive: {exc}") from exc
        yield archive
