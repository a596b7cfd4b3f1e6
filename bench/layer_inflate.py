"""Decompressors for image layers, side by side on one layer of the image_pull "mixed" shape
(30 files of 1 MiB random + 1 MiB text, gzip level 6; zstd level 3 for zstd): MB/s of
unpacked output from 1 MiB compressed reads, CPU seconds of this process, for an external
inflater its wall time (its CPU is another process's), and the wall time of two at once in two
threads as a multiple of one thread's time (x1.0 when the decompressor lets go of the GIL and
two cores are free, x2.0 when it holds the GIL).

    .venv/bin/python bench/layer_inflate.py [-n 5]

What is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.image_pull import case_layers

IN = 1 << 20
OUT = 4 << 20


def inflate_obj(factory: Callable[[], Any], blob: bytes) -> int:
    z = factory()
    n = 0
    for i in range(0, len(blob), IN):
        data = blob[i:i + IN]
        while data:
            out = z.decompress(data, OUT)
            n += len(out)
            data = z.unconsumed_tail
    return n


def unpigz(blob: bytes) -> int:
    p = subprocess.Popen(["unpigz", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None

    def feed() -> None:
        assert p.stdin is not None
        for i in range(0, len(blob), IN):
            p.stdin.write(blob[i:i + IN])
        p.stdin.close()

    t = threading.Thread(target=feed)
    t.start()
    n = 0
    while out := p.stdout.read1(OUT):
        n += len(out)
    t.join()
    p.wait()
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    args = ap.parse_args()
    raw = case_layers("mixed")[0]
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    candidates: dict[str, Callable[[], int]] = {
        "zlib (stdlib)": lambda: inflate_obj(lambda: zlib.decompressobj(31), gz)}
    try:
        from isal import isal_zlib

        from cri.image import inflate
        candidates["isal (isal_zlib)"] = lambda: inflate_obj(
            lambda: isal_zlib.decompressobj(wbits=31), gz)
        candidates["isal (igzip, used)"] = lambda: sum(
            len(c) for c in inflate.gunzip(_pieces(gz), b"", inflate.IsalInflater))
    except ImportError:
        print("isal: not installed")
    try:
        from zlib_ng import zlib_ng
        candidates["zlib-ng"] = lambda: inflate_obj(lambda: zlib_ng.decompressobj(31), gz)
    except ImportError:
        print("zlib-ng: not installed")
    try:
        subprocess.run(["unpigz", "--version"], capture_output=True, check=True)
        candidates["unpigz (external)"] = lambda: unpigz(gz)
    except (OSError, subprocess.CalledProcessError):
        print("unpigz: not installed")
    try:
        import zstandard
        zs = zstandard.ZstdCompressor(level=3).compress(raw)
        candidates["zstd (zstandard)"] = lambda: inflate_obj(
            lambda: _Zstd(zstandard.ZstdDecompressor().decompressobj()), zs)
    except ImportError:
        print("zstandard: not installed")
    print(f"one layer: {len(raw) / 1e6:.1f} MB tar, {len(gz) / 1e6:.1f} MB gzip-6")
    for name, fn in candidates.items():
        walls, cpus = [], []
        for _ in range(args.n):
            c0, t0 = time.process_time(), time.perf_counter()
            assert fn() == len(raw)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        w = statistics.median(walls)
        def runs(fn: Callable[[], int] = fn) -> None:
            for _ in range(args.n):
                fn()

        t0 = time.perf_counter()
        pair = [threading.Thread(target=runs) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        # 1.0: the two threads took as long as one alone (parallel); 2.0: one after the other.
        both = (time.perf_counter() - t0) / sum(walls)
        print(f"{name:<20} {len(raw) / 1e6 / w:7.0f} MB/s   wall {w * 1000:6.1f} ms   "
              f"cpu here {statistics.median(cpus) * 1000:6.1f} ms   "
              f"two threads x{both:.1f}")
    return 0


def _pieces(blob: bytes) -> Callable[[], bytes]:
    it = iter([blob[i:i + IN] for i in range(0, len(blob), IN)])
    return lambda: next(it, b"")


class _Zstd:
    """zstandard's decompressobj has no max_length: the same loop shape with all output."""

    def __init__(self, z: Any) -> None:
        self.z = z
        self.unconsumed_tail = b""

    def decompress(self, data: bytes, _max: int) -> bytes:
        out: bytes = self.z.decompress(data)
        return out


if __name__ == "__main__":
    sys.exit(main())
