"""Daemon RSS idle and with N pods (targets: <= 60 MB idle, <= 70 MB with
30 pods; the goal is in docs/architecture.md, "Performance targets").

    .venv/bin/python bench/daemon_rss.py [-n 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cri.api import api_pb2
from tests.e2e.helpers import Daemon, pod_config


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    d = Daemon.new("bench", log_level="info")
    d.start()
    assert d.proc is not None
    stub = d.runtime()
    ids: list[str] = []
    try:
        time.sleep(1)
        idle = rss_mb(d.proc.pid)
        for _ in range(args.n):
            ids.append(stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config()),
                                          timeout=60).pod_sandbox_id)
        stub.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10)
        loaded = rss_mb(d.proc.pid)
    finally:
        for i in ids:
            stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=i), timeout=60)
            stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=i), timeout=60)
        d.cleanup()
    print(f"daemon RSS idle {idle:.1f} MB (target <= 60), with {args.n} pods {loaded:.1f} MB "
          f"(target <= 70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
