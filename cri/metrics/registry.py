"""The metrics themselves, in a registry of their own: named in Prometheus style (pycri_ prefix,
the unit last, _total on counters), after CRI-O's container_runtime_crio_* set.

A registry per daemon rather than prometheus_client's global one: the process collectors go in
explicitly, and a test (or a second Runtime in one process) counts only what it did itself.
"""

from __future__ import annotations

import grpc
import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)

# The *_created series prometheus_client adds to every counter and histogram double the
# number of series; Prometheus's text format has no use for them (CRI-O has none either).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# From a List* answered from memory (well under a millisecond) to a pull or a stop with a long
# grace period: the client library's defaults stop at 10 s.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0, 60.0, 120.0)
PULL_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_MB = 1 << 20
PULL_BYTES_BUCKETS = (0, _MB, 10 * _MB, 50 * _MB, 100 * _MB, 250 * _MB, 500 * _MB, 1 << 30,
                      5 << 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU seconds, resident memory, open fds, start time), python_info and the
        # garbage collector's counts: the same collectors as the default registry's.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        reg = self.registry
        self.rpcs = Counter(
            "pycri_grpc_requests", "CRI calls served, by method and gRPC status code (errors "
            "are the codes other than OK).", ["method", "code"], registry=reg)
        self.rpc_seconds = Histogram(
            "pycri_grpc_request_duration_seconds", "Time to serve a CRI call, by method "
            "(a streaming call: until its stream ends).", ["method"], buckets=RPC_BUCKETS,
            registry=reg)
        self.pull_seconds = Histogram(
            "pycri_image_pull_duration_seconds", "Time of each image pull that fetched from a "
            "registry (callers sharing one pull count once).", buckets=PULL_SECONDS_BUCKETS,
            registry=reg)
        self.pull_bytes = Histogram(
            "pycri_image_pull_bytes", "Bytes received from registries by each image pull "
            "(manifests, config and the layers it did not have yet).",
            buckets=PULL_BYTES_BUCKETS, registry=reg)
        self.ooms = Counter(
            "pycri_containers_oom", "Containers killed by the kernel's OOM killer.",
            registry=reg)
        self.container_ooms = Counter(
            "pycri_container_oom_kills", "OOM kills, by container (CRI names: pod namespace, "
            "pod and container).", ["namespace", "pod", "container"], registry=reg)

    def rpc_done(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.rpcs.labels(method, code.name).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def image_pulled(self, seconds: float, received: int) -> None:
        self.pull_seconds.observe(seconds)
        self.pull_bytes.observe(received)

    def oom_killed(self, namespace: str, pod: str, container: str) -> None:
        self.ooms.inc()
        self.container_ooms.labels(namespace, pod, container).inc()
