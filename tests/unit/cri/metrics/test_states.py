"""Pods and containers by state: computed from what exists at each scrape, every state
reported (0 included)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from cri.metrics.states import StateCollector


def test_counts_follow_the_stores_at_each_scrape() -> None:
    pods = ["ready", "ready", "notready"]
    containers = ["running", "exited", "running", "created"]
    reg = CollectorRegistry()
    reg.register(StateCollector(lambda: iter(pods), lambda: iter(containers)))

    def scrape() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for family in reg.collect():
            assert family.type == "gauge"
            out[family.name] = {s.labels["state"]: s.value for s in family.samples}
        return out

    assert scrape() == {
        "pycri_pod_sandboxes": {"ready": 2, "notready": 1},
        "pycri_containers": {"created": 1, "running": 2, "exited": 1, "unknown": 0},
    }
    pods.clear()
    containers[:] = ["exited"]
    assert scrape() == {
        "pycri_pod_sandboxes": {"ready": 0, "notready": 0},
        "pycri_containers": {"created": 0, "running": 0, "exited": 1, "unknown": 0},
    }
