"""CreateContainer / StartContainer / StopContainer / RemoveContainer latency over N sequential
containers in one pod, then ListContainers, ListContainerStats and ListPodSandboxStats with
110 pods / 330 running containers.

Starts its own daemon and local registry (as the e2e tests do) with a runnable busybox image.
The stopped container runs `top` under `sh -c` and gets SIGTERM, as in critest's benchmark.
Prints p50/p90 beside its targets (the goal: docs/architecture.md, "Performance targets").

    .venv/bin/python bench/container_lifecycle.py [-n 40] [--pods 110] [--per-pod 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.percentiles import print_table
from cri.api import api_pb2, api_pb2_grpc
from tests.e2e.containers import IMAGE, new_pod, pull, remove_pod, start_registry
from tests.e2e.helpers import Daemon, pod_config

TARGETS_MS = {"Create+Start": 55.0, "StopContainer": 40.0, "ListContainers": 5.0}


TOP = ["sh", "-c", "trap 'exit 0' TERM; top -b -d 1 >/dev/null & wait"]


def ctr_config(name: str, command: list[str] = TOP) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=command,
        log_path=f"{name}.log",
    )


def lifecycle(stub: api_pb2_grpc.RuntimeServiceStub, pod_id: str, pod_cfg: api_pb2.PodSandboxConfig,
              n: int, tag: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("CreateContainer", "StartContainer",
                                                   "Create+Start", "StopContainer",
                                                   "RemoveContainer")}
    for i in range(n):
        t0 = time.perf_counter()
        ctr = stub.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=ctr_config(f"{tag}{i}"), sandbox_config=pod_cfg),
            timeout=60).container_id
        t1 = time.perf_counter()
        stub.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=60)
        t2 = time.perf_counter()
        stub.StopContainer(api_pb2.StopContainerRequest(container_id=ctr, timeout=10), timeout=60)
        t3 = time.perf_counter()
        stub.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=ctr), timeout=60)
        t4 = time.perf_counter()
        out["CreateContainer"].append((t1 - t0) * 1e3)
        out["StartContainer"].append((t2 - t1) * 1e3)
        out["Create+Start"].append((t2 - t0) * 1e3)
        out["StopContainer"].append((t3 - t2) * 1e3)
        out["RemoveContainer"].append((t4 - t3) * 1e3)
    return out


def timed(call: Callable[[], object], samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def list_many(daemon: Daemon, stub: api_pb2_grpc.RuntimeServiceStub, pods: int, per_pod: int,
              samples: int) -> dict[str, list[float]]:
    """Fill the node with pods of running `sleep` containers, then time ListContainers and the
    kubelet's periodic stats calls."""
    def one_pod(i: int) -> str:
        cfg = pod_config(f"list-{i}")
        pod_id = stub.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg),
                                    timeout=120).pod_sandbox_id
        for j in range(per_pod):
            ctr = stub.CreateContainer(api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=ctr_config(f"c{j}", ["sleep", "3600"]),
                sandbox_config=cfg), timeout=120).container_id
            stub.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=120)
        return pod_id

    with ThreadPoolExecutor(8) as ex:
        pod_ids = list(ex.map(one_pod, range(pods)))
    try:
        got = len(stub.ListContainers(api_pb2.ListContainersRequest(), timeout=30).containers)
        print(f"ListContainers over {got} running containers in {len(pod_ids)} pods")
        return {
            "ListContainers": timed(lambda: stub.ListContainers(
                api_pb2.ListContainersRequest(), timeout=30), samples),
            "ListContainerStats": timed(lambda: stub.ListContainerStats(
                api_pb2.ListContainerStatsRequest(), timeout=60), samples // 10),
            "ListPodSandboxStats": timed(lambda: stub.ListPodSandboxStats(
                api_pb2.ListPodSandboxStatsRequest(), timeout=60), samples // 10),
        }
    finally:
        def drop(pod_id: str) -> None:
            stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
            stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id),
                                  timeout=120)
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(drop, pod_ids))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--per-pod", type=int, default=3)
    args = ap.parse_args()
    daemon = Daemon.new("bench", log_level="info")
    daemon.start()
    reg = None
    try:
        reg, _ = start_registry(daemon)
        pull(daemon)
        stub = daemon.runtime()
        with tempfile.TemporaryDirectory() as tmp:
            pod = new_pod(daemon, Path(tmp))
            try:
                lifecycle(stub, pod.id, pod.config, 3, "warm")
                results = lifecycle(stub, pod.id, pod.config, args.n, "c")
            finally:
                remove_pod(pod)
        results.update(list_many(daemon, stub, args.pods, args.per_pod, 100))
    finally:
        if reg is not None:
            reg.stop()
        daemon.cleanup()
    print(f"{args.n} sequential containers; ListContainers with {args.pods} pods x "
          f"{args.per_pod} containers")
    print_table(results, TARGETS_MS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
