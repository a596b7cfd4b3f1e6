"""[pycri.metrics] on a real daemon: scraped before and after a pull, a pod and container
lifecycle, a failing call and an OOM kill, the values move as a node's operator would expect;
https with the configured certificate; a port already taken stops the daemon at start-up with
the key named; a daemon with metrics off opens no port for them."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cri.api import api_pb2
from cri.image import manifest as m
from tests.e2e.containers import IMAGE, new_pod, pull, remove_pod, serving
from tests.e2e.helpers import Daemon, need_root
from tests.fixtures.registry import LocalRegistry
from tests.selfsigned import HAVE_OPENSSL, make_cert

pytestmark = [pytest.mark.e2e, pytest.mark.node]

MiB = 1 << 20
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_metrics(d: Daemon, port: int, extra: str = "") -> None:
    with d.config_path.open("a") as f:
        f.write(f"[pycri.metrics]\nenable_metrics = true\nmetrics_host = \"127.0.0.1\"\n"
                f"metrics_port = {port}\n{extra}")


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class Metered:
    daemon: Daemon
    registry: LocalRegistry
    url: str

    def scrape(self) -> Samples:
        reply = httpx.get(self.url, timeout=10)
        assert reply.status_code == 200
        return parse(reply.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def calls(samples: Samples, method: str, code: str = "OK") -> float:
    return value(samples, "pycri_grpc_requests_total", method=method, code=code)


@pytest.fixture(scope="module")
def metered() -> Iterator[Metered]:
    need_root()
    d = Daemon.new("metrics")
    port = free_port()
    with_metrics(d, port)
    with serving(d, pulled=False) as reg:
        yield Metered(d, reg, f"http://127.0.0.1:{port}/metrics")


def test_values_move_with_pulls_lifecycles_and_errors(metered: Metered, tmp_path: Path) -> None:
    d = metered.daemon
    before = metered.scrape()
    assert value(before, "process_resident_memory_bytes") > 0
    assert value(before, "process_cpu_seconds_total") > 0
    assert value(before, "pycri_pod_sandboxes", state="ready") == 0
    assert value(before, "pycri_containers", state="running") == 0

    pull(d)
    got = httpx.get(f"http://{metered.registry.host}/v2/ctr/busybox/manifests/latest",
                    headers={"Accept": m.OCI_MANIFEST}, timeout=10)
    manifest = got.json()
    wire = len(got.content) + manifest["config"]["size"] + sum(
        layer["size"] for layer in manifest["layers"])
    pulled = metered.scrape()
    assert calls(pulled, "PullImage") - calls(before, "PullImage") == 1
    assert value(pulled, "pycri_image_pull_duration_seconds_count") == 1
    assert value(pulled, "pycri_image_pull_duration_seconds_sum") > 0
    # Every byte of the image crossed the wire once: manifest, config and layers.
    assert value(pulled, "pycri_image_pull_bytes_sum") == wire
    assert value(pulled, "pycri_image_pull_bytes_count") == 1

    pod = new_pod(d, tmp_path)
    removed = False
    try:
        ctr = pod.run("sleeper", ["sleep", "600"])
        running = metered.scrape()
        assert value(running, "pycri_pod_sandboxes", state="ready") == 1
        assert value(running, "pycri_containers", state="running") == 1
        for method in ("RunPodSandbox", "CreateContainer", "StartContainer"):
            assert calls(running, method) - calls(before, method) == 1, method
            assert value(running, "pycri_grpc_request_duration_seconds_count",
                         method=method) >= 1, method

        with pytest.raises(grpc.RpcError) as err:
            d.runtime().ContainerStatus(api_pb2.ContainerStatusRequest(container_id="0" * 64),
                                        timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        failed = metered.scrape()
        assert (calls(failed, "ContainerStatus", "NOT_FOUND")
                - calls(running, "ContainerStatus", "NOT_FOUND")) == 1

        pod.stop(ctr)
        stopped = metered.scrape()
        assert value(stopped, "pycri_containers", state="running") == 0
        assert value(stopped, "pycri_containers", state="exited") == 1
        d.runtime().StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id),
                                   timeout=60)
        assert value(metered.scrape(), "pycri_pod_sandboxes", state="notready") == 1
        remove_pod(pod)
        removed = True
        gone = metered.scrape()
        assert value(gone, "pycri_pod_sandboxes", state="notready") == 0
        assert value(gone, "pycri_containers", state="exited") == 0
        assert calls(gone, "RemovePodSandbox") - calls(before, "RemovePodSandbox") == 1
        assert value(gone, "pycri_containers_oom_total") == value(before, "pycri_containers_oom_total")
    finally:
        if not removed:
            remove_pod(pod)


def test_an_oom_kill_is_counted_for_its_container(metered: Metered, tmp_path: Path) -> None:
    """As test_container_runtime's memory hog: busybox tail of /dev/zero under 32 MiB."""
    pull(metered.daemon, IMAGE)
    before = metered.scrape()
    pod = new_pod(metered.daemon, tmp_path)
    try:
        res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 * MiB)
        ctr = pod.run("hog", ["tail", "/dev/zero"], resources=res)
        st = pod.wait_exit(ctr, timeout=120)
        assert (st.exit_code, st.reason) == (137, "OOMKilled")
        after = metered.scrape()
    finally:
        remove_pod(pod)
    assert value(after, "pycri_containers_oom_total") - value(
        before, "pycri_containers_oom_total") == 1
    assert value(after, "pycri_container_oom_kills_total", namespace="e2e",
                 pod=pod.config.metadata.name, container="hog") == 1


@pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl binary")
def test_metrics_over_https(tmp_path: Path) -> None:
    need_root()
    d = Daemon.new("metrics-tls")
    cert, key = make_cert(d.base)
    port = free_port()
    with_metrics(d, port, f'metrics_cert = "{cert}"\nmetrics_key = "{key}"\n')
    try:
        d.start()
        url = f"https://127.0.0.1:{port}/metrics"
        reply = httpx.get(url, verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
        assert reply.status_code == 200
        samples = parse(reply.text)
        assert value(samples, "pycri_containers", state="running") == 0
        assert calls(samples, "ListPodSandbox") >= 1  # the test's readiness probe
        with pytest.raises(httpx.HTTPError):  # plain http gets nothing from a TLS port
            httpx.get(url.replace("https://", "http://"), timeout=10)
    finally:
        d.cleanup()


def test_a_taken_port_or_a_bad_certificate_stops_start_up(metered: Metered) -> None:
    taken = int(metered.url.split(":")[2].split("/")[0])
    d = Daemon.new("metrics-taken")
    with_metrics(d, taken)
    try:
        log = d.start_fails()
        assert f"pycri.metrics.metrics_port: cannot listen on 127.0.0.1:{taken}" in log
        assert not d.socket.exists()  # nothing left of the half-started daemon
    finally:
        d.cleanup()
    d = Daemon.new("metrics-badcert")
    junk = d.base / "junk.pem"
    junk.write_text("not a certificate\n")
    with_metrics(d, free_port(), f'metrics_cert = "{junk}"\nmetrics_key = "{junk}"\n')
    try:
        log = d.start_fails()
        assert f"pycri.metrics.metrics_cert: cannot load {junk}" in log
    finally:
        d.cleanup()


def listening_ports(pid: int) -> set[int]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            ports.add(int(line.split()[3].rsplit(":", 1)[1]))
    return ports


def test_metrics_off_opens_no_port(daemon: Daemon, metered: Metered) -> None:
    """The session daemon runs with the defaults: its one TCP port is the streaming server's;
    the metered daemon has one more, the metrics endpoint's."""
    assert daemon.proc is not None and metered.daemon.proc is not None
    assert len(listening_ports(daemon.proc.pid)) == 1
    metered_ports = listening_ports(metered.daemon.proc.pid)
    assert len(metered_ports) == 2
    assert int(metered.url.split(":")[2].split("/")[0]) in metered_ports
