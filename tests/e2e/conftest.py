"""e2e fixtures: one real pycri daemon per session (see helpers.Daemon)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.api import api_pb2_grpc
from tests.e2e.containers import Pod, pods, pull, remove_all_images, start_registry
from tests.e2e.helpers import Daemon, assert_nothing_left, close_connections, need_root, pod_netns
from tests.fixtures.registry import LocalRegistry


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    need_root()
    netns_before = pod_netns()
    d = Daemon.new()
    d.start()
    try:
        yield d
        # Every test removes its pods: the whole session must leave nothing behind.
        assert_nothing_left(d, netns_before)
    finally:
        d.cleanup()


@pytest.fixture(autouse=True)
def _close_streaming_connections() -> Iterator[None]:
    yield
    close_connections()


@pytest.fixture(scope="module")
def registry(daemon: Daemon) -> Iterator[LocalRegistry]:
    """A local registry with a runnable busybox (tests/e2e/containers.py), one per module; the
    images the module pulled are removed afterwards, so each module starts with an empty store."""
    reg, _ = start_registry(daemon)
    try:
        yield reg
    finally:
        reg.stop()
        remove_all_images(daemon)


@pytest.fixture(scope="module")
def image(daemon: Daemon, registry: LocalRegistry) -> str:
    return pull(daemon)


@pytest.fixture
def pod(daemon: Daemon, image: str, tmp_path: Path) -> Iterator[Pod]:
    yield from pods(daemon, tmp_path)


@pytest.fixture
def rt(daemon: Daemon) -> api_pb2_grpc.RuntimeServiceStub:
    if daemon.proc is None or daemon.proc.poll() is not None:
        daemon.start()
    return daemon.runtime()
