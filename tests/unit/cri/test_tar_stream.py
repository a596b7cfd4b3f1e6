"""TarStream: the members tarfile sees, with the data handed out across any chunking."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.image.tar_stream import TarStream, TarStreamError


def _tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in (("a", os.urandom(3000)), ("d" * 150 + "/long", b"x" * 513),
                           ("empty", b"")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            if fmt == tarfile.PAX_FORMAT:
                ti.pax_headers = {"SCHILY.xattr.user.k": "v"}
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("l")
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 200
        tf.addfile(link)
    return buf.getvalue()


def _chunks(blob: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(blob), size):
        yield blob[i:i + size]


def _read_all(stream: TarStream) -> list[tuple[str, str, bytes, dict[str, str]]]:
    out = []
    while (m := stream.next()) is not None:
        data = b"".join(bytes(v) for v in stream.data(m.size)) if m.isreg() else b""
        out.append((m.name, m.linkname, data, dict(m.pax_headers)))
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT],
                         ids=["pax", "gnu"])
@pytest.mark.parametrize("size", [1, 100, 512, 4096, 1 << 20])
def test_members_match_tarfile_whatever_the_chunking(fmt: int, size: int) -> None:
    blob = _tar(fmt)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        want = [(m.name, m.linkname, tf.extractfile(m).read() if m.isreg() else b"",  # type: ignore[union-attr]
                 dict(m.pax_headers)) for m in tf.getmembers()]
    assert _read_all(TarStream(_chunks(blob, size), tarfile.TarInfo)) == want


def test_unread_data_is_skipped() -> None:
    stream = TarStream(_chunks(_tar(tarfile.PAX_FORMAT), 700), tarfile.TarInfo)
    names = []
    while (m := stream.next()) is not None:
        names.append(m.name)
    assert names == ["a", "d" * 150 + "/long", "empty", "l"]


def test_damaged_or_cut_streams_are_errors() -> None:
    blob = _tar(tarfile.GNU_FORMAT)
    damaged = bytearray(blob)
    damaged[512 + 3000 + 88 + 100] ^= 0xFF  # inside the second header: its checksum fails
    stream = TarStream(_chunks(bytes(damaged), 4096), tarfile.TarInfo)
    with pytest.raises(TarStreamError, match="bad tar header"):
        _read_all(stream)
    with pytest.raises(TarStreamError, match="ended"):
        _read_all(TarStream(_chunks(blob[:1000], 4096), tarfile.TarInfo))
    with pytest.raises(TarStreamError, match="empty"):
        TarStream(iter([]), tarfile.TarInfo).next()
    # The end of the stream at a header boundary ends the archive, as for tarfile.
    assert [n for n, *_ in _read_all(TarStream(_chunks(blob[:512 + 3072], 4096),
                                               tarfile.TarInfo))] == ["a"]


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_come_with_their_map(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "sparse"
    with src.open("wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(3 << 20)
        f.write(b"end")
    blob = subprocess.run(["tar", "-c", "-S", f"--format={fmt}", "-C", str(tmp_path),
                           "sparse"], capture_output=True, check=True).stdout
    stream = TarStream(_chunks(blob, 1000), tarfile.TarInfo)
    m = stream.next()
    assert m is not None and m.sparse
    out = bytearray(m.size)
    for offset, size in m.sparse:
        out[offset:offset + size] = b"".join(bytes(v) for v in stream.data(size))
    assert bytes(out) == src.read_bytes()
    assert stream.next() is None
