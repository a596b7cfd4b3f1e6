"""A pull through the HTTP proxy the daemon's environment names (HTTP_PROXY, with credentials
in the URL), the way a node behind a corporate proxy runs pycri: manifests through the registry
client, layers through the worker threads' own GETs (blob_http), all of them via the proxy."""

from __future__ import annotations

import pytest

from cri.api import api_pb2
from tests.e2e.containers import IMAGE, pull, start_registry
from tests.e2e.helpers import Daemon, need_root
from tests.fixtures.http_proxy import HTTPProxy

pytestmark = pytest.mark.e2e


def test_a_pull_goes_through_the_environments_proxy() -> None:
    need_root()
    d = Daemon.new("proxy")
    reg, pushed = start_registry(d)
    proxy = HTTPProxy(user="puller", password="s3cret")
    d.env.update({"HTTP_PROXY": proxy.url, "NO_PROXY": "", "no_proxy": ""})
    try:
        d.start()
        assert pull(d, IMAGE) == pushed.image_id
        status = d.image().ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=IMAGE)), timeout=10)
        assert list(status.image.repo_digests) == [f"ctr.test/busybox@{pushed.manifest_digest}"]
        gets = [s for s in proxy.seen if s.method == "GET"]
        base = f"http://{reg.host}/v2/ctr/busybox"
        assert f"{base}/manifests/latest" in {s.target for s in gets}
        layers = [s for s in gets if s.target.rsplit("/", 1)[-1] in pushed.layer_digests]
        assert {s.target.rsplit("/", 1)[-1] for s in layers} == set(pushed.layer_digests)
        # Asked for as stored, as only the worker threads' GET does (httpx asks for gzip).
        assert {s.accept_encoding for s in layers} == {"identity"}
        assert proxy.refused == 0
    finally:
        d.cleanup()
        reg.stop()
        proxy.close()
