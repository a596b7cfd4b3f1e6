"""Layer decompression: gzip (concatenated members), zstd or none, told by magic bytes, as
chunks of at most OUT_CHUNK bytes (a compression bomb never sits in memory whole).

gzip goes through ISA-L's igzip (the ``isal`` package) when it is installed, else the stdlib's
zlib. Measured on this project's machines (bench/layer_inflate.py, one 63 MB layer of the
image_pull "mixed" shape): zlib 2.2 GB/s, isal 5.0-6.0 GB/s, zlib-ng 5.1-6.0 GB/s, an external
unpigz 0.4-1.0 GB/s (what containerd runs; here its pipes cost more than it saves). Of isal's
two interfaces IgzipDecompressor is used: like bz2's decompressor it keeps the input it could
not take yet, where a zlib-style decompressobj hands it back as a fresh unconsumed_tail copy
on every call; both let go of the GIL while inflating (the layers of a pull inflate in
parallel threads).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import IO, Protocol, cast

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The most one decompress call hands out. 256 KiB pieces (and 256 KiB reads of the body)
# beat 1 MiB ones on both counts (bench/image_pull, 4 layers in parallel on 2 cores): the
# mixed image 0.30 s vs 0.36-0.44 s, the random one 0.38 vs 0.86 s, and a peak daemon RSS of
# 63-78 MB vs 78-108 MB (1 MiB pieces left glibc's heaps fragmented: 35 MB of RSS over 14 MB
# of live Python objects); the pieces stay in the caches between hashing, inflating and
# writing.
OUT_CHUNK = 1 << 18

Read = Callable[[], bytes]  # the next piece of the compressed stream, b"" at its end


class CorruptStream(Exception):
    """The compressed stream does not decompress (bad data, bad checksum, cut short)."""


class Inflater(Protocol):
    """One gzip member, the interface of bz2/lzma decompressors and IgzipDecompressor."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class ZlibInflater:
    """zlib's decompressobj behind the Inflater interface (Python 3.11 has no
    zlib._ZlibDecompressor): input it could not take yet is kept in unconsumed_tail."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)  # gzip header and trailer (CRC, size) checked

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._z.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        try:
            return self._z.decompress(data or self._z.unconsumed_tail,
                                      max(max_length, 0))
        except zlib.error as exc:
            raise CorruptStream(str(exc)) from exc


class IsalInflater:
    def __init__(self) -> None:
        from isal import igzip_lib

        self._error = cast("type[Exception]", igzip_lib.IsalError)
        self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)

    @property
    def eof(self) -> bool:
        return bool(self._d.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._d.unused_data)

    @property
    def needs_input(self) -> bool:
        return bool(self._d.needs_input)

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        try:
            return bytes(self._d.decompress(data, max_length))
        except (self._error, EOFError) as exc:
            raise CorruptStream(str(exc)) from exc


def _isal_available() -> bool:
    try:
        from isal import igzip_lib  # noqa: F401
    except ImportError:
        return False
    return True


def choose_inflater() -> Callable[[], Inflater]:
    """isal's when it is installed; an install without it (a platform it has no wheel for)
    still unpacks, with zlib."""
    return IsalInflater if _isal_available() else ZlibInflater


GZIP_INFLATER = choose_inflater()  # chosen once


def gunzip(read: Read, first: bytes, new: Callable[[], Inflater] | None = None
           ) -> Iterator[bytes]:
    """Concatenated gzip members; zero padding between or after members is skipped, as
    gzip.GzipFile does. Anything else after a member must be another member."""
    make = new or GZIP_INFLATER
    d = make()
    data = first
    while True:
        if d.eof:
            rest = d.unused_data.lstrip(b"\0")
            while not rest:
                more = read()
                if not more:
                    return
                rest = more.lstrip(b"\0")
            d, data = make(), rest
        elif d.needs_input and not data:
            data = read()
            if not data:
                raise CorruptStream("gzip stream ended before the end of its last member")
        out = d.decompress(data, OUT_CHUNK)
        data = b""
        if out:
            yield out


class _Source:
    """A file-like view of ``read`` for zstandard's stream reader."""

    def __init__(self, read: Read, first: bytes) -> None:
        self._read = read
        self._pending = first

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        return self._read()


def unzstd(read: Read, first: bytes) -> Iterator[bytes]:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise CorruptStream("zstd layer, but the 'zstandard' package is not installed") from exc
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], _Source(read, first)), read_size=OUT_CHUNK, read_across_frames=True)
    try:
        while out := reader.read(OUT_CHUNK):
            yield out
    except zstandard.ZstdError as exc:
        raise CorruptStream(f"zstd: {exc}") from exc


def plain(read: Read, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while data := read():
        yield data


def decompressed(read: Read) -> Iterator[bytes]:
    """The uncompressed stream, told by its magic bytes as containerd does: a media type is
    only a label (a layer whose bytes do not match it must still hash to its diff_id)."""
    head = b""
    while len(head) < len(ZSTD_MAGIC):
        more = read()
        if not more:
            break
        head += more
    if head.startswith(GZIP_MAGIC):
        return gunzip(read, head)
    if head.startswith(ZSTD_MAGIC):
        return unzstd(read, head)
    return plain(read, head)
