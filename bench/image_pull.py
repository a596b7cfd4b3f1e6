"""PullImage time and throughput for a multi-layer image of about 240 MB from a local registry.

Starts its own registry (Debian's docker-registry on loopback) and daemon, pushes an image of
4 x 60 MB layers of incompressible data, then pulls it N times (removing it in between).

    .venv/bin/python bench/image_pull.py [-n 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cri.api import api_pb2
from tests.e2e.helpers import Daemon
from tests.fixtures.images import push_image, tar_layer
from tests.fixtures.registry import LocalRegistry

LAYERS, LAYER_MB = 4, 60


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3)
    args = ap.parse_args()
    d = Daemon.new("bench", log_level="info")
    reg = LocalRegistry(d.base / "registry")
    reg.start()
    try:
        layers = [tar_layer({f"data/blob{i}": os.urandom(LAYER_MB << 20)}) for i in range(LAYERS)]
        push_image(reg, "bench/big", "v1", layers)
        total = sum(len(x) for x in layers)
        d.registries_conf.write_text(
            f'[[registry]]\nprefix = "bench.test"\nlocation = "{reg.host}/bench"\n'
            "insecure = true\n")
        d.start()
        img = d.image()
        spec = api_pb2.ImageSpec(image="bench.test/big:v1")
        times = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            img.PullImage(api_pb2.PullImageRequest(image=spec), timeout=600)
            times.append(time.perf_counter() - t0)
            img.RemoveImage(api_pb2.RemoveImageRequest(image=spec), timeout=60)
    finally:
        reg.stop()
        d.cleanup()
    mb = total / 1e6
    print(f"image: {LAYERS} layers, {mb:.0f} MB (gzip of random data: about the same on the wire)")
    print(f"pull time  median {statistics.median(times):.2f} s  min {min(times):.2f} s")
    print(f"throughput median {mb / statistics.median(times):.0f} MB/s  "
          f"best {mb / min(times):.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
