"""Images.pull against a real docker-registry on loopback: layer size limits and foreign layers,
and that a failed pull leaves nothing in the store."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from cri.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, Unavailable
from cri.image import images as images_mod
from cri.image import layer_fetch, unpack
from cri.image import manifest as m
from cri.image.auth import Credentials
from cri.image.blob_http import BlobBody
from cri.image.images import Images
from cri.image.registries_conf import Endpoint
from cri.image.registry import BlobRequest, RegistryUnavailable
from cri.image.store import ImageRecord
from tests.fixtures.images import push_image, tar_layer
from tests.fixtures.registry import LocalRegistry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers needs root (chown)")

FOREIGN_URL = "https://example.invalid/windows/base.tar.gz"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    with pytest.MonkeyPatch.context() as mp:
        # docker-registry refuses manifests with foreign layers unless their URLs are allowed.
        mp.setenv("REGISTRY_VALIDATION_MANIFESTS_URLS_ALLOW", '["^https://"]')
        try:
            reg.start()
        except RuntimeError as exc:
            pytest.skip(str(exc))
    try:
        yield reg
    finally:
        reg.stop()


def _images(tmp_path: Path, reg: LocalRegistry) -> Images:
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    images = Images(tmp_path / "images", conf)
    images.load()
    return images


def _pull(images: Images, ref: str) -> ImageRecord:
    async def scenario() -> ImageRecord:
        try:
            return await images.pull(ref, Credentials())
        finally:
            await images.close()
    return asyncio.run(scenario())


def _assert_nothing_left(images: Images) -> None:
    store = images.store
    assert list(store.tmp.iterdir()) == []
    assert list(store.layers.iterdir()) == [] and list(store.links.iterdir()) == []
    assert store.images == {} and list(store.records.iterdir()) == []
    assert store.pinned == {}


def test_a_layer_over_the_byte_limit_fails_the_pull_and_leaves_nothing(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tar_layer({"etc/hostname": b"x\n"})
    big = tar_layer({"data/blob": b"z" * 5000})
    pushed = push_image(registry, "limits/bytes", "v1", [small, big])
    monkeypatch.setattr(unpack, "MAX_LAYER_BYTES", 4096)
    images = _images(tmp_path, registry)
    with pytest.raises(InvalidArgument) as err:
        _pull(images, f"{registry.host}/limits/bytes:v1")
    assert pushed.layer_digests[1] in err.value.message
    assert "limits/bytes:v1" in err.value.message and "more than 4096 bytes" in err.value.message
    # The small layer may have been committed before the big one failed; a retry with the
    # default limit works and nothing of the failed attempt is in the way.
    assert list(images.store.tmp.iterdir()) == [] and images.store.images == {}
    monkeypatch.undo()
    again = _images(tmp_path, registry)
    rec = _pull(again, f"{registry.host}/limits/bytes:v1")
    assert rec.id == pushed.image_id
    top = again.store.layer_dir(rec.chain_ids[1]) / "diff" / "data" / "blob"
    assert top.read_bytes() == b"z" * 5000


def test_a_layer_over_the_entry_limit_fails_the_pull(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    many = tar_layer({f"f/{i}": b"" for i in range(20)})  # 21 entries with the directory
    pushed = push_image(registry, "limits/entries", "v1", [many])
    monkeypatch.setattr(unpack, "MAX_LAYER_ENTRIES", 20)
    images = _images(tmp_path, registry)
    with pytest.raises(InvalidArgument, match="more than 20 entries") as err:
        _pull(images, f"{registry.host}/limits/entries:v1")
    assert pushed.layer_digests[0] in err.value.message
    _assert_nothing_left(images)


def _push_with_foreign(reg: LocalRegistry, repo: str, *, push_foreign_blob: bool,
                       media_type: str = m.DOCKER_LAYER_FOREIGN) -> tuple[str, str]:
    """An image whose second layer is foreign; returns (the foreign digest, its content)."""
    base = tar_layer({"bin/x": b"base"})
    foreign_raw = tar_layer({"Files/windows.txt": b"foreign"})
    foreign_gz = gzip.compress(foreign_raw, mtime=0)
    foreign_digest = "sha256:" + hashlib.sha256(foreign_gz).hexdigest()
    if push_foreign_blob:
        assert reg.push_blob(repo, foreign_gz) == foreign_digest
    base_gz = gzip.compress(base, mtime=0)
    diff_ids = ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in (base, foreign_raw)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": m.DOCKER_MANIFEST,
        "config": {"mediaType": m.DOCKER_CONFIG, "digest": reg.push_blob(repo, config),
                   "size": len(config)},
        "layers": [
            {"mediaType": m.DOCKER_LAYER_GZIP, "digest": reg.push_blob(repo, base_gz),
             "size": len(base_gz)},
            {"mediaType": media_type, "digest": foreign_digest, "size": len(foreign_gz),
             "urls": [FOREIGN_URL]},
        ]}
    reg.push_manifest(repo, "v1", manifest)
    return foreign_digest, "foreign"


def test_a_foreign_layer_the_registry_lacks_fails_early_and_clearly(
        tmp_path: Path, registry: LocalRegistry) -> None:
    digest, _ = _push_with_foreign(registry, "foreign/missing", push_foreign_blob=False)
    images = _images(tmp_path, registry)
    ref = f"{registry.host}/foreign/missing:v1"
    with pytest.raises(FailedPrecondition) as err:
        _pull(images, ref)
    assert err.value.message == (f"foreign layer {digest} of {ref} must be fetched from "
                                 f"{FOREIGN_URL}; pycri does not download foreign layers")
    _assert_nothing_left(images)  # early: not even the base layer was fetched


def test_a_foreign_layer_the_registry_has_is_pulled_from_it(
        tmp_path: Path, registry: LocalRegistry) -> None:
    _push_with_foreign(registry, "foreign/present", push_foreign_blob=True,
                       media_type=m.OCI_LAYER_NONDIST_GZIP)
    images = _images(tmp_path, registry)
    rec = _pull(images, f"{registry.host}/foreign/present:v1")
    diff = images.store.layer_dir(rec.chain_ids[1]) / "diff"
    assert (diff / "Files" / "windows.txt").read_bytes() == b"foreign"
    assert list(images.store.tmp.iterdir()) == []


def test_a_cancelled_caller_waits_for_its_worker_thread() -> None:
    # A failing layer cancels the others; their tmp dirs are removed after this returns, so
    # the unpack (or commit) thread must have stopped by then.
    stop = threading.Event()
    started = threading.Event()
    finished: list[bool] = []

    def work() -> None:
        started.set()
        stop.wait(30)  # only a bound for a broken build: the cancellation sets stop
        time.sleep(0.1)  # still busy when the second cancellation comes
        finished.append(stop.is_set())
        raise RuntimeError("stopped")

    async def scenario() -> None:
        task = asyncio.ensure_future(images_mod._in_thread(work, stop.set))
        await asyncio.to_thread(started.wait)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # a TaskGroup aborts its children again when its own caller gives up
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == [True]

    asyncio.run(scenario())


def test_a_stopped_unpack_ends_at_its_next_read(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    dest = tmp_path / "diff"
    dest.mkdir()
    stream = images_mod._StoppableFile(io.BytesIO(tar_layer({"a": b"1"})), stop)
    with pytest.raises(images_mod._Stopped):
        unpack.unpack_image_layer(stream, dest)  # type: ignore[arg-type]
    assert list(dest.iterdir()) == []


# A layer is downloaded by its worker thread (blob_http) or, where the registry client has
# to do it (a proxy, a transport of its own), by the event loop through a pipe: both ways are
# tested.
PATHS = ["thread", "piped"]


class _Flaky:
    """Breaks the downloads of the blobs ``only`` names: their first ``breaks`` downloads stop
    after the first chunk with a transient error; ``corrupt`` flips a byte of it. In the
    worker thread's GET (``thread``) or in RegistryClient.blob (``piped``)."""

    def __init__(self, images: Images, only: list[str], *, breaks: int = 0,
                 corrupt: bool = False, path: str = "piped",
                 monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.real = images.client.blob
        self.only = set(only)
        self.breaks = breaks
        self.corrupt = corrupt
        self.calls: dict[str, int] = {}
        if path == "piped":
            images.client.blob_request = lambda *a, **k: None  # type: ignore[method-assign]
            images.client.blob = self.blob  # type: ignore[method-assign]
        else:
            assert monkeypatch is not None
            real_open = layer_fetch.open_blob

            def open_blob(req: BlobRequest) -> BlobBody:
                digest = req.url.rsplit("/", 1)[1]
                self.calls[digest] = self.calls.get(digest, 0) + 1
                body = real_open(req)
                if digest not in self.only:
                    return body
                return _FlakyBody(self, body, self.calls[digest] <= self.breaks)  # type: ignore[return-value]

            monkeypatch.setattr(layer_fetch, "open_blob", open_blob)

    async def blob(self, ep: Endpoint, digest: str, creds: Credentials | None = None
                   ) -> AsyncIterator[bytes]:
        self.calls[digest] = self.calls.get(digest, 0) + 1
        first = digest in self.only
        async for chunk in self.real(ep, digest, creds):
            if first and self.corrupt:
                chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
            yield chunk
            if first and self.calls[digest] <= self.breaks:
                raise RegistryUnavailable(f"{ep.host}: connection reset (test)")
            first = False


class _FlakyBody:
    def __init__(self, flaky: _Flaky, body: BlobBody, breaks: bool) -> None:
        self.flaky = flaky
        self.body = body
        self.breaks = breaks
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        if self.reads > 1 and self.breaks:
            raise RegistryUnavailable("127.0.0.1: connection reset (test)")
        chunk = self.body.read()
        if self.reads == 1 and self.flaky.corrupt:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        return chunk

    def abort(self) -> None:
        self.body.abort()

    def close(self) -> None:
        self.body.close()


def _big_layer() -> bytes:
    # Several pipe-fulls, so the unpacker is reading while the download goes on.
    return tar_layer({"data/blob": os.urandom(3 << 20), "data/after": b"tail"})


@pytest.mark.parametrize("path", PATHS)
def test_a_download_broken_mid_layer_is_retried_from_a_clean_unpack(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch,
        path: str) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)  # the back-off
    layer = _big_layer()
    pushed = push_image(registry, "flaky/once", "v1", [layer])
    images = _images(tmp_path, registry)
    flaky = _Flaky(images, pushed.layer_digests, breaks=1, path=path, monkeypatch=monkeypatch)
    rec = _pull(images, f"{registry.host}/flaky/once:v1")
    assert rec.id == pushed.image_id
    assert flaky.calls[pushed.layer_digests[0]] == 2
    diff = images.store.layer_dir(rec.chain_ids[0]) / "diff"
    assert (diff / "data" / "after").read_bytes() == b"tail"
    assert sorted(p.name for p in (diff / "data").iterdir()) == ["after", "blob"]
    assert list(images.store.tmp.iterdir()) == []
    # Written out after the pull answered (close waits for it): no layer left marked.
    assert not any(images.store.unsynced(c) for c in rec.chain_ids)


@pytest.mark.parametrize("path", PATHS)
def test_a_registry_that_keeps_breaking_is_unavailable_and_leaves_nothing(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch,
        path: str) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    pushed = push_image(registry, "flaky/always", "v1", [_big_layer()])
    images = _images(tmp_path, registry)
    flaky = _Flaky(images, pushed.layer_digests, breaks=99, path=path, monkeypatch=monkeypatch)
    with pytest.raises(Unavailable, match="connection reset"):
        _pull(images, f"{registry.host}/flaky/always:v1")
    assert flaky.calls[pushed.layer_digests[0]] == images_mod.BLOB_ATTEMPTS
    _assert_nothing_left(images)


@pytest.mark.parametrize("path", PATHS)
def test_a_blob_that_does_not_match_its_digest_is_refused_and_leaves_nothing(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch,
        path: str) -> None:
    pushed = push_image(registry, "flaky/corrupt", "v1", [_big_layer()])
    images = _images(tmp_path, registry)
    _Flaky(images, pushed.layer_digests, corrupt=True, path=path, monkeypatch=monkeypatch)
    with pytest.raises(Internal, match=f"layer {pushed.layer_digests[0]}.*digest") as err:
        _pull(images, f"{registry.host}/flaky/corrupt:v1")
    assert err.value.code is not None
    _assert_nothing_left(images)


async def _no_sleep(delay: float, result: object = None) -> object:
    return result


def test_each_pull_reports_its_time_and_the_bytes_it_received(
        tmp_path: Path, registry: LocalRegistry) -> None:
    pushed = push_image(registry, "metered/app", "v1", [tar_layer({"a": b"a" * 3000}),
                                                        tar_layer({"b": b"b" * 5000})])
    got = httpx.get(f"http://{registry.host}/v2/metered/app/manifests/v1",
                    headers={"Accept": m.OCI_MANIFEST})
    manifest = got.json()
    small = len(got.content) + manifest["config"]["size"]  # what every pull fetches
    layers = sum(layer["size"] for layer in manifest["layers"])
    images = _images(tmp_path, registry)
    reports: list[tuple[float, int]] = []
    images.on_pulled = lambda seconds, received: reports.append((seconds, received))
    ref = f"{registry.host}/metered/app:v1"

    async def scenario() -> None:
        try:
            # Two callers, one pull: reported once.
            first = await asyncio.gather(images.pull(ref, Credentials()),
                                         images.pull(ref, Credentials()))
            assert {rec.id for rec in first} == {pushed.image_id}
            await images.pull(ref, Credentials())  # the layers are here: not fetched again
        finally:
            await images.close()
    asyncio.run(scenario())
    assert [received for _, received in reports] == [small + layers, small]
    assert all(seconds > 0 for seconds, _ in reports)


def test_a_layer_get_refused_for_want_of_a_token_is_answered_and_sent_again(
        tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.token_registry import TokenRegistry

    pushed = push_image(registry, "private/layer", "v1", [tar_layer({"a": b"1"})])
    front = TokenRegistry(registry, {"alice": "s3cret"})
    front.start()
    try:
        images = _images(tmp_path, registry)
        (tmp_path / "registries.conf").write_text(
            f'[[registry]]\nlocation = "{front.host}"\ninsecure = true\n')
        real = images.client.blob_request
        sent: list[str] = []

        def without_token(*args: object, **kwargs: object) -> BlobRequest | None:
            req = real(*args, **kwargs)  # type: ignore[arg-type]
            assert req is not None
            sent.append(req.headers.pop("Authorization", ""))  # as if it had none yet
            return req

        monkeypatch.setattr(images.client, "blob_request", without_token)

        async def scenario() -> ImageRecord:
            try:
                return await images.pull(f"{front.host}/private/layer:v1",
                                         Credentials(username="alice", password="s3cret"))
            finally:
                await images.close()

        rec = asyncio.run(scenario())
        assert rec.id == pushed.image_id and sent and sent[0].startswith("Bearer ")
        assert (images.store.layer_dir(rec.chain_ids[0]) / "diff" / "a").read_bytes() == b"1"
    finally:
        front.stop()


def test_a_deadline_mid_layer_stops_the_worker_thread_and_leaves_nothing(
        tmp_path: Path, registry: LocalRegistry) -> None:
    from tests.fixtures.token_registry import TokenRegistry

    push_image(registry, "slow/layer", "v1", [_big_layer()])
    front = TokenRegistry(registry, None, throttle=0.05)  # 64 KiB every 50 ms: ~3 s a layer
    front.start()
    try:
        images = _images(tmp_path, registry)
        (tmp_path / "registries.conf").write_text(
            f'[[registry]]\nlocation = "{front.host}"\ninsecure = true\n')

        async def scenario() -> None:
            try:
                await images.pull(f"{front.host}/slow/layer:v1", Credentials(), deadline=0.5)
            finally:
                await images.close()

        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            asyncio.run(scenario())
        assert front.blob_started.is_set()  # it was in the middle of the layer
        assert time.monotonic() - started < 2.5  # the blocked read was ended, not waited out
        _assert_nothing_left(images)
    finally:
        front.stop()
