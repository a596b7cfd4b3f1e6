"""Layer decompression: isal and zlib give the same bytes for every gzip shape, and zlib is
what is used when isal is not installed."""

from __future__ import annotations

import builtins
import gzip
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cri.image import inflate
from cri.image.inflate import CorruptStream, Inflater, IsalInflater, ZlibInflater

DATA = os.urandom(3 << 20) + b"text " * 500_000  # several output chunks, stored and deflated
INFLATERS: list[Callable[[], Inflater]] = [ZlibInflater, IsalInflater]


def _reader(blob: bytes, piece: int) -> Callable[[], bytes]:
    pieces = iter([blob[i:i + piece] for i in range(0, len(blob), piece)])
    return lambda: next(pieces, b"")


def _all(chunks: Iterator[bytes]) -> bytes:
    out = []
    for c in chunks:
        assert len(c) <= inflate.OUT_CHUNK  # a bomb never sits in memory whole
        out.append(c)
    return b"".join(out)


@pytest.mark.parametrize("new", INFLATERS, ids=["zlib", "isal"])
@pytest.mark.parametrize("piece", [1, 4096, 1 << 20])
def test_gzip_members_padding_and_pieces(new: Callable[[], Inflater], piece: int) -> None:
    data = DATA if piece > 1 else DATA[:5000]  # one byte at a time: a small stream
    half = len(data) // 2
    blob = (gzip.compress(data[:half], 6) + b"\0" * 1000 + gzip.compress(data[half:], 1)
            + b"\0" * 10)
    read = _reader(blob, piece)
    first = read()
    assert _all(inflate.gunzip(read, first, new)) == data


@pytest.mark.parametrize("new", INFLATERS, ids=["zlib", "isal"])
@pytest.mark.parametrize("blob", [
    gzip.compress(b"x" * 5000)[:-20],  # cut short
    gzip.compress(b"x" * 5000)[:-8] + b"\0\0\0\0" + gzip.compress(b"x" * 5000)[-4:],  # CRC
    gzip.compress(b"x" * 5000) + b"trailing garbage",
], ids=["truncated", "crc", "garbage-after"])
def test_corrupt_gzip(new: Callable[[], Inflater], blob: bytes) -> None:
    read = _reader(blob, 1000)
    with pytest.raises(CorruptStream):
        _all(inflate.gunzip(read, read(), new))


def test_zstd_and_plain_are_told_by_magic() -> None:
    zstandard = pytest.importorskip("zstandard")
    c = zstandard.ZstdCompressor()
    blob = c.compress(DATA[:1 << 20]) + c.compress(DATA[1 << 20:])
    assert _all(inflate.decompressed(_reader(blob, 65536))) == DATA
    assert _all(inflate.decompressed(_reader(DATA, 65536))) == DATA
    assert _all(inflate.decompressed(_reader(b"ab", 1))) == b"ab"  # shorter than any magic
    with pytest.raises(CorruptStream):
        _all(inflate.decompressed(_reader(b"\x28\xb5\x2f\xfd" + b"not zstd" * 100, 100)))


def test_zlib_is_used_without_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_isal(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "isal" or name.startswith("isal."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_isal)
    for mod in [m for m in sys.modules if m == "isal" or m.startswith("isal.")]:
        monkeypatch.delitem(sys.modules, mod)
    chosen = inflate.choose_inflater()
    assert chosen is ZlibInflater
    blob = gzip.compress(DATA)
    read = _reader(blob, 1 << 20)
    assert _all(inflate.gunzip(read, read(), chosen)) == DATA
    monkeypatch.undo()
    assert inflate.choose_inflater() is IsalInflater  # what this install has
