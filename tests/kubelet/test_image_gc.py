"""The kubelet's image garbage collection removes an image no container uses, through pycri's
RemoveImage, and keeps the one a running pod uses.

How it is triggered: the kubelet's periodic image GC (imageGCHighThresholdPercent, or
imageMaximumGCAge) runs once at start-up and then every 5 minutes, and the age rule skips the
first run on purpose: neither is deterministic in a test. The eviction manager checks every 10 s
and, when the image filesystem is short of its threshold, first frees space at node level:
dead containers, then every unused image (DeleteUnusedImages). With imagefs.available at 99%
any real disk is "short", so the reclaim runs on each check; static pods count as critical and
are never evicted, so the running pod stays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cri.api import api_pb2
from tests.e2e.containers import IMAGE
from tests.fixtures.images import push_image, runnable_busybox_layers
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import Kubelet
from tests.kubelet.pods import container, pod, poll, running, wait_pod

pytestmark = pytest.mark.kubelet
VICTIM = "ctr.test/gc-victim:latest"
UNDER_PRESSURE = {
    "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                     "nodefs.inodesFree": "1%", "imagefs.available": "99%",
                     "imagefs.inodesFree": "1%"},
    # An image is only collected once it was first seen this long ago (0 means the default,
    # 2 minutes): the eviction manager's next check, 10 s on, finds it old enough.
    "imageMinimumGCAge": "1s",
}


def images(node: Node) -> dict[str, set[str]]:
    """pycri's images: tag -> ids."""
    listed = node.daemon.image().ListImages(api_pb2.ListImagesRequest(), timeout=30).images
    found: dict[str, set[str]] = {}
    for img in listed:
        for tag in img.repo_tags:
            found.setdefault(tag, set()).add(img.id)
    return found


@pytest.fixture
def victim_pulled(node: Node) -> Iterator[None]:
    """An image the kubelet pulled for a pod that is gone: unused, as on any node."""
    node.kubelet.ensure()
    push_image(node.registry, "ctr/gc-victim", "latest", runnable_busybox_layers(),
               cmd=["sh"], extra="victim")
    pods = StaticPods(node)
    pods.add(pod("victim", container("app", ["sleep", "1000"], image=VICTIM)))
    wait_pod(node.kubelet, "victim", "running", lambda p: running(p, "app"))
    pods.remove_all()
    assert VICTIM in images(node)
    yield


def test_unused_image_is_removed(node: Node, victim_pulled: None, static_pods: StaticPods
                                 ) -> None:
    static_pods.add(pod("keeper", container("app", ["sleep", "1000"])))
    k: Kubelet = node.kubelet
    wait_pod(k, "keeper", "running", lambda p: running(p, "app"))
    kept = images(node)[IMAGE]
    k.ensure(**UNDER_PRESSURE)
    poll(f"the kubelet to remove {VICTIM} through RemoveImage",
         lambda: VICTIM not in images(node))
    assert images(node).get(IMAGE) == kept
    p = wait_pod(k, "keeper", "still running", lambda p: running(p, "app"))
    assert p.status.phase == "Running"
