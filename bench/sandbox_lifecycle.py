"""RunPodSandbox / StopPodSandbox / RemovePodSandbox latency over N sequential pods.

Starts its own daemon (own root, socket, bridge and subnet, as the e2e tests do) unless
--endpoint points at a running one. Prints p50/p90 beside its targets (the goal: docs/architecture.md,
"Performance targets").

    .venv/bin/python bench/sandbox_lifecycle.py [-n 40] [--endpoint unix:///run/pycri/pycri.sock]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.percentiles import print_table
from cri.api import api_pb2, api_pb2_grpc
from tests.e2e.helpers import Daemon, pod_config

TARGETS_MS = {"RunPodSandbox": 90.0, "Stop+Remove": 80.0}


def bench(stub: api_pb2_grpc.RuntimeServiceStub, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"RunPodSandbox": [], "StopPodSandbox": [],
                                   "RemovePodSandbox": [], "Stop+Remove": []}
    for _ in range(n):
        t0 = time.perf_counter()
        pod_id = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config()),
                                    timeout=60).pod_sandbox_id
        t1 = time.perf_counter()
        stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        t2 = time.perf_counter()
        stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        t3 = time.perf_counter()
        out["RunPodSandbox"].append((t1 - t0) * 1e3)
        out["StopPodSandbox"].append((t2 - t1) * 1e3)
        out["RemovePodSandbox"].append((t3 - t2) * 1e3)
        out["Stop+Remove"].append((t3 - t1) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--endpoint")
    args = ap.parse_args()
    daemon = None
    if args.endpoint:
        channel = grpc.insecure_channel(args.endpoint)
    else:
        daemon = Daemon.new("bench", log_level="info")
        daemon.start()
        channel = daemon.channel()
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    try:
        bench(stub, 3)  # warm-up: first runs load plugins and code paths
        results = bench(stub, args.n)
    finally:
        if daemon is not None:
            daemon.cleanup()
    print(f"{args.n} sequential pods")
    print_table(results, TARGETS_MS, decimals=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
