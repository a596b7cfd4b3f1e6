"""/stats/summary as the kubelet builds it from pycri's stats calls (PodAndContainerStatsFromCRI:
ListPodSandboxStats, ListContainerStats, ImageFsInfo)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.containers import IMAGE
from tests.kubelet.conftest import StaticPods
from tests.kubelet.node import NAMESPACE, NODE, Kubelet
from tests.kubelet.pods import container, pod, poll, running, wait_pod

pytestmark = pytest.mark.kubelet
# Each container spends a little CPU now and then and holds some memory (a shell and a file in
# its writable layer), so every figure the kubelet reports has something to count.
BUSY = ("head -c 4000000 /dev/zero > /tmp/ballast; "
        "while true; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 1; done")


def pod_stats(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in summary.get("pods", []) if p["podRef"]["name"] == f"{name}-{NODE}"
                 and p["podRef"]["namespace"] == NAMESPACE), None)


def counted(ps: dict[str, Any] | None, names: set[str]) -> dict[str, Any] | None:
    """The pod's stats once every container has non-zero CPU and memory figures."""
    if ps is None or {c["name"] for c in ps.get("containers", [])} != names:
        return None
    for c in ps["containers"]:
        if not (c.get("cpu", {}).get("usageCoreNanoSeconds")
                and c.get("memory", {}).get("workingSetBytes")):
            return None
    return ps


def test_summary_has_cpu_and_memory_for_every_container(kubelet: Kubelet,
                                                        static_pods: StaticPods) -> None:
    static_pods.add(pod("stats", container("one", ["sh", "-c", BUSY]),
                        container("two", ["sh", "-c", BUSY])))
    wait_pod(kubelet, "stats", "running", lambda p: running(p, "one") and running(p, "two"))
    ps = poll("CPU and memory of both containers in /stats/summary",
              lambda: counted(pod_stats(kubelet.summary(), "stats"), {"one", "two"}))
    for c in ps["containers"]:
        assert c["memory"]["usageBytes"] >= c["memory"]["workingSetBytes"] > 0, c
        assert c["rootfs"]["usedBytes"] > 0, c  # the ballast file in the writable layer
        assert c["logs"]["usedBytes"] >= 0, c
    assert ps["cpu"]["usageCoreNanoSeconds"] > 0 and ps["memory"]["workingSetBytes"] > 0
    # What the eviction manager ranks pods by: writable layers and logs.
    assert ps["ephemeral-storage"]["usedBytes"] >= sum(c["rootfs"]["usedBytes"]
                                                      for c in ps["containers"]) > 0
    # The pod's network, read in its namespace by pycri (cAdvisor cannot find it).
    interfaces = {i["name"] for i in ps["network"].get("interfaces", [])}
    assert "eth0" in interfaces, ps["network"]
    # metrics-server's source: /metrics/resource, one series per container.
    metrics = kubelet.get("/metrics/resource").text
    for name in ("one", "two"):
        for series in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes"):
            value = resource_metric(metrics, series, name)
            assert value is not None and value > 0, (series, name)
    # Prometheus' usual source: /metrics/cadvisor, from pycri's ListPodSandboxMetrics, the
    # image named as the pod's status names it. (Its CPU seconds are whole seconds: the CRI
    # carries integers, and these containers have not used one yet.)
    cadvisor = kubelet.get("/metrics/cadvisor").text
    for name in ("one", "two"):
        series = [line for line in cadvisor.splitlines()
                  if line.startswith("container_memory_working_set_bytes{")
                  and f'container="{name}"' in line and f'pod="stats-{NODE}"' in line]
        assert len(series) == 1 and f'image="{IMAGE}"' in series[0], series
        assert float(series[0].split("}")[1].split()[0]) > 0
    # The node-level figures the kubelet's eviction manager relies on.
    summary = kubelet.summary()
    assert summary["node"]["runtime"]["imageFs"]["capacityBytes"] > 0
    assert summary["node"]["runtime"]["imageFs"]["usedBytes"] > 0


def resource_metric(text: str, series: str, container: str) -> float | None:
    """The value of ``series`` for the stats pod's ``container`` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(series + "{") and f'container="{container}"' in line \
                and f'pod="stats-{NODE}"' in line:
            return float(line.split("}")[1].split()[0])
    return None
