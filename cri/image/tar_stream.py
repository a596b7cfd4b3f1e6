"""Tar members from a stream of decompressed chunks, file data handed out without copies.

tarfile's stream mode copies every byte of file data several times on its way out (its
``_Stream`` joins and re-slices its buffer on each read, extractfile reads through it again):
for a 250 MB layer that was most of the unpacker's own CPU. Here headers are still parsed by
tarfile itself - ``TarInfo.fromtarfile`` with this reader standing in for the TarFile (it
reads only ``fileobj``, ``encoding``, ``errors``, ``pax_headers`` and ``offset``) - so PAX,
GNU long names and sparse maps mean exactly what they mean to tarfile, while file data comes
out as memoryviews of the decompressor's own output chunks, ready for os.write.

Stricter than tarfile's stream mode in one way, like Go's archive/tar: a damaged or cut header
in the middle of the stream is an error (tarfile ends the archive there silently).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

# Raised by TarInfo.frombuf, absent from typeshed: a zero block (the end of the archive) and
# no bytes at all.
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EMPTY_HEADER: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


class TarStreamError(tarfile.TarError):
    """The stream is not a readable tar (a damaged or cut header, data cut short)."""


class TarStream:
    """``next()`` gives the members in order; ``data(n)`` the next n bytes of the current
    member's data. What a member's data leaves unread is skipped by the next ``next()``."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, chunks: Iterator[bytes], tarinfo: type[tarfile.TarInfo]) -> None:
        self._chunks = chunks
        self._tarinfo = tarinfo
        self._buf = b""
        self._at = 0  # read position in _buf
        self._pos = 0  # bytes consumed from the stream
        # What fromtarfile expects of a TarFile: global PAX headers, the next header's offset.
        self.pax_headers: dict[str, str] = {}
        self.offset = 0
        self.fileobj = self

    # The part of a file object that tarfile's header parsing uses.
    def tell(self) -> int:
        return self._pos

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer at the end of the stream (headers only: small)."""
        if self._at + n <= len(self._buf):
            out = self._buf[self._at:self._at + n]
            self._at += n
            self._pos += n
            return out
        return b"".join(bytes(view) for view in self._pieces(n))

    def _pieces(self, n: int) -> Iterator[memoryview]:
        """Up to ``n`` bytes as views of the chunks they are in (fewer at the end)."""
        while n > 0:
            if self._at >= len(self._buf):
                nxt = next(self._chunks, None)
                if nxt is None:
                    return
                self._buf, self._at = nxt, 0
                continue
            k = min(n, len(self._buf) - self._at)
            view = memoryview(self._buf)[self._at:self._at + k]
            self._at += k
            self._pos += k
            n -= k
            yield view

    def data(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` bytes of the current member's data; TarStreamError if the stream
        ends first."""
        got = 0
        for view in self._pieces(n):
            got += len(view)
            yield view
        if got < n:
            raise TarStreamError(f"the stream ended {n - got} bytes into a member's data")

    def _skip_to(self, offset: int) -> None:
        for _ in self.data(offset - self._pos):
            pass

    def next(self) -> tarfile.TarInfo | None:
        """The next member, or None at the end of the archive (a zero block, or the end of
        the stream at a header boundary)."""
        if self.offset > self._pos:
            self._skip_to(self.offset)
        at_start = self._pos == 0
        try:
            return self._tarinfo.fromtarfile(self)  # type: ignore[arg-type]
        except _EOF_HEADER:
            return None
        except _EMPTY_HEADER:
            if at_start:
                raise TarStreamError("empty stream") from None
            return None
        except tarfile.HeaderError as exc:
            raise TarStreamError(f"bad tar header at byte {self._pos}: {exc}") from None
