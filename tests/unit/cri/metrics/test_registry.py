"""The names and labels an operator's queries and alerts use, as the exposition shows them."""

from __future__ import annotations

import grpc
from prometheus_client import generate_latest

from cri.metrics.registry import Metrics


def test_exposed_names_labels_and_values() -> None:
    metrics = Metrics()
    metrics.rpc_done("RunPodSandbox", grpc.StatusCode.OK, 0.07)
    metrics.rpc_done("ContainerStatus", grpc.StatusCode.NOT_FOUND, 0.0002)
    metrics.image_pulled(0.8, 4 << 20)
    metrics.oom_killed("default", "web", "app")
    metrics.oom_killed("default", "web", "app")
    text = generate_latest(metrics.registry).decode()
    lines = set(text.splitlines())
    for line in (
        'pycri_grpc_requests_total{code="OK",method="RunPodSandbox"} 1.0',
        'pycri_grpc_requests_total{code="NOT_FOUND",method="ContainerStatus"} 1.0',
        'pycri_grpc_request_duration_seconds_count{method="RunPodSandbox"} 1.0',
        'pycri_grpc_request_duration_seconds_bucket{le="0.1",method="RunPodSandbox"} 1.0',
        'pycri_grpc_request_duration_seconds_bucket{le="0.05",method="RunPodSandbox"} 0.0',
        "pycri_image_pull_duration_seconds_count 1.0",
        "pycri_image_pull_bytes_sum 4.194304e+06",
        "pycri_containers_oom_total 2.0",
        'pycri_container_oom_kills_total{container="app",namespace="default",pod="web"} 2.0',
    ):
        assert line in lines, line
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)
    assert any(line.startswith("process_cpu_seconds_total ") for line in lines)
    assert "_created" not in text  # one series per counter, as Prometheus expects
    # Another daemon's registry (or another test's) starts from nothing.
    assert Metrics().registry.get_sample_value("pycri_containers_oom_total") == 0
