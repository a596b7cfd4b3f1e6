"""What the smoke test of the kubeadm cluster needs besides its fixtures."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")
WAIT = 240.0  # seconds any one state change may take on a busy 2-core machine


@dataclass(frozen=True)
class Cluster:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    discovery: client.DiscoveryV1Api
    namespace: str
    image: str
    kubectl: str
    hostpath: Path
    # How to run a command on the node when this test does not run there (a kind node:
    # "docker exec NODE"); empty when it does.
    node_exec: tuple[str, ...] = ()

    def run_kubectl(self, *args: str, input: bytes | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.kubectl, "-n", self.namespace, *args], input=input,
                              capture_output=True, timeout=timeout)

    def kubectl_ok(self, *args: str, input: bytes | None = None) -> str:
        done = self.run_kubectl(*args, input=input)
        assert done.returncode == 0, (args, done.returncode, done.stderr.decode())
        return done.stdout.decode()


def http_get(url: str, quiet: bool = False) -> str | None:
    """The body of a GET to url from here; None for a refused connection when quiet."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return str(resp.read().decode().strip())
    except (ConnectionRefusedError, urllib.error.URLError):
        if quiet:
            return None
        raise


# http_get on the node, by its Python (pycri's): exit 3 for a refused connection.
NODE_GET = """import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as resp:
        sys.stdout.write(resp.read().decode().strip())
except (ConnectionRefusedError, urllib.error.URLError) as exc:
    sys.stderr.write(str(exc))
    sys.exit(3)
"""


def node_get(c: Cluster, url: str, quiet: bool = False) -> str | None:
    """http_get from the node: traffic of the node's own (to a ClusterIP, say)."""
    if not c.node_exec:
        return http_get(url, quiet)
    done = subprocess.run([*c.node_exec, "python3", "-c", NODE_GET, url],
                          capture_output=True, timeout=60)
    if done.returncode == 3 and quiet:
        return None
    assert done.returncode == 0, (url, done.returncode, done.stderr.decode())
    return done.stdout.decode()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    """probe() until it returns something other than None (or False); fails naming what."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s (last: {last!r})")


def need(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: run this through sh hack/k8s/cluster.sh")
    return value


def exists(read: Callable[[], object]) -> bool:
    """read() finds its object (False on 404)."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
