"""The image service through a real daemon and a real registry (Debian's docker-registry on
loopback), reached through registries.conf as a kubelet's pulls would be."""

from __future__ import annotations

import base64
import io
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.helpers import Daemon, pod_config
from tests.fixtures.images import busybox_layers, push_image, tar_layer
from tests.fixtures.registry import LocalRegistry

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registry(daemon: Daemon) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(daemon.base / "registry")
    try:
        reg.start()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    daemon.registries_conf.write_text(
        'unqualified-search-registries = ["e2e.test"]\n'
        f'[[registry]]\nprefix = "e2e.test"\nlocation = "{reg.host}/e2e"\ninsecure = true\n'
        f'[[registry]]\nprefix = "other.test"\nlocation = "{reg.host}/other"\ninsecure = true\n'
    )
    try:
        yield reg
    finally:
        reg.stop()


def pull(daemon: Daemon, image: str, timeout: float = 60) -> str:
    req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))
    return daemon.image().PullImage(req, timeout=timeout).image_ref


def status(daemon: Daemon, image: str) -> api_pb2.Image | None:
    resp = daemon.image().ImageStatus(
        api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)), timeout=10)
    return resp.image if resp.HasField("image") else None


def rmi(daemon: Daemon, image: str) -> None:
    daemon.image().RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)),
                               timeout=30)


def store_layers(daemon: Daemon) -> set[str]:
    return {p.name for p in (daemon.root / "images" / "layers").iterdir()}


def test_pull_status_list_remove(daemon: Daemon, rt, registry: LocalRegistry) -> None:
    pushed = push_image(registry, "e2e/app", "v1", busybox_layers(), user="www-data")
    ref = pull(daemon, "e2e.test/app:v1")
    assert ref == pushed.image_id
    img = status(daemon, "e2e.test/app:v1")
    assert img is not None
    assert img.id == pushed.image_id
    assert list(img.repo_tags) == ["e2e.test/app:v1"]
    assert list(img.repo_digests) == [f"e2e.test/app@{pushed.manifest_digest}"]
    assert img.username == "www-data" and not img.HasField("uid") and img.size > 0
    for spec in (pushed.image_id, pushed.image_id[7:19], f"e2e.test/app@{pushed.manifest_digest}"):
        found = status(daemon, spec)
        assert found is not None and found.id == img.id, spec
    listed = daemon.image().ListImages(api_pb2.ListImagesRequest(), timeout=10).images
    assert img.id in {i.id for i in listed}
    verbose = daemon.image().ImageStatus(api_pb2.ImageStatusRequest(
        image=api_pb2.ImageSpec(image=img.id), verbose=True), timeout=10)
    assert "diff_ids" in verbose.info["info"]
    assert status(daemon, "e2e.test/nothing:here") is None

    # The same image under another name gets a second tag; removal by one tag removes both.
    push_image(registry, "other/app", "v1", busybox_layers(), user="www-data")
    pull(daemon, "other.test/app:v1")
    both = status(daemon, img.id)
    assert both is not None and set(both.repo_tags) == {"e2e.test/app:v1", "other.test/app:v1"}
    assert len(store_layers(daemon)) == 2  # layers are shared, not stored twice
    rmi(daemon, "other.test/app:v1")
    assert status(daemon, "e2e.test/app:v1") is None
    rmi(daemon, "other.test/app:v1")  # idempotent
    assert store_layers(daemon) == set()  # the last image's layers are freed


def test_index_digest_unqualified_and_shared_layers(daemon: Daemon, rt,
                                                    registry: LocalRegistry) -> None:
    a = push_image(registry, "e2e/multi", "v2", busybox_layers("a"), index=True, extra="a")
    b = push_image(registry, "e2e/single", "v1", busybox_layers("b"), extra="b")
    assert pull(daemon, "multi:v2") == a.image_id  # unqualified: the search registry
    by_digest = pull(daemon, f"e2e.test/single@{b.manifest_digest}")
    img = status(daemon, by_digest)
    assert img is not None and list(img.repo_tags) == []  # by digest: no tag
    assert list(img.repo_digests) == [f"e2e.test/single@{b.manifest_digest}"]
    assert len(store_layers(daemon)) == 3  # the busybox layer is shared
    rmi(daemon, a.image_id)
    assert len(store_layers(daemon)) == 2  # still used by the other image
    rmi(daemon, by_digest)
    assert store_layers(daemon) == set()


def test_concurrent_pulls_share_one_download(daemon: Daemon, rt,
                                             registry: LocalRegistry) -> None:
    pushed = push_image(registry, "e2e/shared", "v1", busybox_layers("shared"), extra="s")
    with ThreadPoolExecutor(4) as pool:
        refs = list(pool.map(lambda _: pull(daemon, "e2e.test/shared:v1"), range(4)))
    assert refs == [pushed.image_id] * 4
    assert daemon.log.read_text().count(f"as {pushed.image_id}") == 1
    rmi(daemon, pushed.image_id)


def test_unknown_image_and_bad_references(daemon: Daemon, rt, registry: LocalRegistry) -> None:
    with pytest.raises(grpc.RpcError) as err:
        pull(daemon, "e2e.test/missing:v1")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"{registry.host}/e2e/missing" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        pull(daemon, "Not A Reference")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_malicious_layer_is_refused_and_leaves_nothing(daemon: Daemon, rt,
                                                       registry: LocalRegistry) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../../../tmp/pycri-escape")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    push_image(registry, "e2e/evil", "v1", [tar_layer({"ok": b"fine"}), buf.getvalue()])
    with pytest.raises(grpc.RpcError) as err:
        pull(daemon, "e2e.test/evil:v1")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "climbs out" in (err.value.details() or "")
    assert status(daemon, "e2e.test/evil:v1") is None
    assert not list((daemon.root / "images" / "tmp").iterdir())
    assert not Path("/tmp/pycri-escape").exists()


def test_deadline_exceeded_leaves_no_temp_files(daemon: Daemon, rt) -> None:
    # A "registry" that accepts connections and never answers.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    saved = daemon.registries_conf.read_text()
    daemon.registries_conf.write_text(
        saved + f'[[registry]]\nprefix = "stuck.test"\nlocation = "127.0.0.1:{port}"\n'
                'insecure = true\n')
    try:
        with pytest.raises(grpc.RpcError) as err:
            pull(daemon, "stuck.test/app:v1", timeout=2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
        daemon.registries_conf.write_text(saved)
    assert not list((daemon.root / "images" / "tmp").iterdir())
    assert status(daemon, "stuck.test/app:v1") is None


def test_token_auth_with_pull_credentials(daemon: Daemon, rt, registry: LocalRegistry) -> None:
    from tests.fixtures.token_registry import TokenRegistry

    pushed = push_image(registry, "private/app", "v1", busybox_layers("private"), extra="p")
    front = TokenRegistry(registry, {"alice": "s3cret"})
    front.start()
    saved = daemon.registries_conf.read_text()
    daemon.registries_conf.write_text(
        saved + f'[[registry]]\nprefix = "private.test"\nlocation = "{front.host}/private"\n'
                'insecure = true\n')
    spec = api_pb2.ImageSpec(image="private.test/app:v1")
    try:
        with pytest.raises(grpc.RpcError) as err:  # anonymous: the token server says no
            daemon.image().PullImage(api_pb2.PullImageRequest(image=spec), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        wrong = api_pb2.AuthConfig(username="alice", password="wrong")
        with pytest.raises(grpc.RpcError) as err:
            daemon.image().PullImage(api_pb2.PullImageRequest(image=spec, auth=wrong), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        good = api_pb2.AuthConfig(auth=base64.b64encode(b"alice:s3cret").decode())
        ref = daemon.image().PullImage(api_pb2.PullImageRequest(image=spec, auth=good),
                                       timeout=60).image_ref
        assert ref == pushed.image_id
        granted = [q for q in front.token_requests if q.get("scope")]
        assert granted[-1]["scope"] == ["repository:private/app:pull"]
        assert granted[-1]["service"] == ["token-registry"]
    finally:
        front.stop()
        daemon.registries_conf.write_text(saved)
        rmi(daemon, "private.test/app:v1")


def test_pause_image_runs_the_infra_from_the_store(daemon: Daemon, registry: LocalRegistry
                                                    ) -> None:
    """pause_image set: RunPodSandbox pulls it once, runs the infra from the image (a
    writable overlay that runc makes read-only), the image is pinned, removal unmounts it."""
    layer = tar_layer({"pause": Path("/usr/bin/catatonit").read_bytes()}, modes={"pause": 0o755})
    push_image(registry, "e2e/pause", "3.9", [layer], entrypoint=["/pause"], cmd=["-P"])
    d2 = Daemon.new()
    d2.registries_conf.write_text(daemon.registries_conf.read_text())
    d2.config_path.write_text(d2.config_path.read_text().replace(
        "[pycri.image]\n", '[pycri.image]\npause_image = "e2e.test/pause:3.9"\n'))
    d2.start()
    try:
        rt2 = d2.runtime()
        pod_id = rt2.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config()),
                                   timeout=60).pod_sandbox_id
        rootfs = d2.runroot / "sandboxes" / pod_id / "infra" / "rootfs"
        assert os.path.ismount(rootfs) and (rootfs / "pause").exists()
        img = status(d2, "e2e.test/pause:3.9")
        assert img is not None and img.pinned
        rt2.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        rt2.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()
    finally:
        d2.cleanup()


def test_daemon_killed_mid_pull_leaves_nothing_after_restart(daemon: Daemon, rt,
                                                             registry: LocalRegistry) -> None:
    from tests.fixtures.token_registry import TokenRegistry

    big = tar_layer({"data": os.urandom(4 << 20)})
    push_image(registry, "slow/app", "v1", [big])
    front = TokenRegistry(registry, None, throttle=0.05)
    front.start()
    saved = daemon.registries_conf.read_text()
    daemon.registries_conf.write_text(
        saved + f'[[registry]]\nprefix = "slow.test"\nlocation = "{front.host}/slow"\n'
                'insecure = true\n')
    errors: list[grpc.RpcError] = []

    def call() -> None:
        try:
            pull(daemon, "slow.test/app:v1")
        except grpc.RpcError as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    try:
        assert front.blob_started.wait(30), "the layer download never started"
        assert list((daemon.root / "images" / "tmp").iterdir()), "no download in progress"
        daemon.stop(kill=True)
        t.join(30)
        assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE
    finally:
        front.stop()
        daemon.registries_conf.write_text(saved)
    daemon.start()
    assert not list((daemon.root / "images" / "tmp").iterdir())
    assert not list((daemon.root / "images" / "layers").iterdir())
    assert status(daemon, "slow.test/app:v1") is None


def test_mirrors_are_tried_in_order_before_the_location(daemon: Daemon, rt,
                                                        registry: LocalRegistry) -> None:
    from tests.fixtures.registry import free_port

    pushed = push_image(registry, "upstream/app", "v1", busybox_layers("m"), extra="m")
    saved = daemon.registries_conf.read_text()
    dead = f"127.0.0.1:{free_port()}"
    daemon.registries_conf.write_text(
        saved + f'[[registry]]\nprefix = "mirrored.test"\nlocation = "{dead}/x"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{dead}/m"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{registry.host}/upstream"\ninsecure = true\n')
    try:
        assert pull(daemon, "mirrored.test/app:v1") == pushed.image_id
        img = status(daemon, "mirrored.test/app:v1")
        assert img is not None and list(img.repo_tags) == ["mirrored.test/app:v1"]
    finally:
        daemon.registries_conf.write_text(saved)
        rmi(daemon, pushed.image_id)
