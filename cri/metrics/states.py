"""Pods and containers by state, counted from the daemon's in-memory stores at each scrape.

Computed, not kept: a gauge moved by hand at every transition drifts the first time a path
forgets it (recovery, a failed create, an exit while the daemon was down); the stores are the
truth that List* answers from. Every state is reported, 0 included, so a query for one state
finds a series even on an idle node. The scrape runs on the event loop (cri/metrics/endpoint),
the thread that changes the stores, so the counts are of one consistent moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cri.store.container import ContainerState
from cri.store.sandbox import SandboxState

PODS = "pycri_pod_sandboxes"
CONTAINERS = "pycri_containers"


def _by_state(name: str, doc: str, states: Iterable[str], current: Iterable[str]
              ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    counts = Counter(current)
    for state in states:
        family.add_metric([state], counts.get(state, 0))
    return family


class StateCollector(Collector):
    """``pods`` and ``containers`` give the state (the store enums' values) of each pod
    sandbox and each container that exists now."""

    def __init__(self, pods: Callable[[], Iterable[str]],
                 containers: Callable[[], Iterable[str]]) -> None:
        self._pods = pods
        self._containers = containers

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry checks them at registration without a premature collect.
        yield from self._families((), ())

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._pods(), self._containers())

    @staticmethod
    def _families(pods: Iterable[str], containers: Iterable[str]) -> Iterator[Metric]:
        yield _by_state(PODS, "Pod sandboxes, by state (ready, notready).",
                        [s.value for s in SandboxState], pods)
        yield _by_state(CONTAINERS, "Containers, by state (created, running, exited, unknown).",
                        [s.value for s in ContainerState], containers)
