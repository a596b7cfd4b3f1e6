"""Images: lookups by id, id prefix, tag or digest, and pulls through registries.conf.

Identical concurrent pulls share one task, and so do identical layer downloads; a pull whose
last waiter gives up is cancelled and leaves nothing behind (temp files live in the store's
tmp/ and are removed on every exit path, and on start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from cri.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from cri.image import manifest as mf
from cri.image import pull_meter, stages
from cri.image.auth import Credentials
from cri.image.blob_http import BlobStatus
from cri.image.layer_fetch import LayerFetch
from cri.image.layer_slots import FairSlots, default_slots
from cri.image.reference import (
    DEFAULT_DOMAIN,
    InvalidReference,
    Reference,
    image_id,
    looks_like_id_prefix,
    parse,
)
from cri.image.registries_conf import BlockedRegistry, Endpoint, RegistriesConfWatcher
from cri.image.registry import (
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
)
from cri.image.shared import SharedTasks, until_done
from cri.image.stages import StageClock
from cri.image.store import ImageRecord, ImageStore, chain_ids
from cri.image.unpack import LayerStats, LayerTooLarge, UnsafeLayer, unpack_image_layer
from sandbox.fdio import write_all
from sandbox.oci.inotify import IN_MOVED_TO, Inotify

log = logging.getLogger(__name__)

BLOB_ATTEMPTS = 3
PROGRESS_EVERY = 5.0  # seconds between progress lines of a large download
PIPE_BYTES = 1 << 20  # the download-to-unpacker pipe (pipe-max-size's default)

_T = TypeVar("_T")


class _Stopped(Exception):
    """Raised inside an unpack thread whose pull was cancelled (never seen by callers)."""


class _StoppableFile:
    """A layer blob that fails its next read once ``stop`` is set: a thread cannot be
    cancelled, but an unpack reads its blob at least every megabyte, so it ends soon."""

    def __init__(self, raw: BinaryIO, stop: threading.Event) -> None:
        self.raw = raw
        self.stop = stop

    def read(self, n: int = -1) -> bytes:
        if self.stop.is_set():
            raise _Stopped("pull cancelled")
        return self.raw.read(n)


async def _in_thread(fn: Callable[[], _T], stop: Callable[[], None] | None = None) -> _T:
    """``fn()`` in a worker thread. If the caller is cancelled, ``stop()`` is called and the
    thread waited for before the cancellation goes on: the caller's cleanup (removing its tmp
    dir) must not run while the thread still writes there, or while a commit moves a
    half-removed tree into the store."""
    job = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if stop is not None:
            stop()
        with contextlib.suppress(asyncio.CancelledError):
            await until_done(job)  # a second cancellation waits for the thread too
        if not job.cancelled():
            job.exception()  # retrieved: the cancellation is what the caller reports
        raise


def foreign_layer_message(desc: mf.Descriptor, image: str) -> str:
    where = ", ".join(desc.urls) or "the URLs its manifest should list (it lists none)"
    return (f"foreign layer {desc.digest} of {image} must be fetched from {where}; pycri does "
            "not download foreign layers")


def name_of(rec: ImageRecord, *asked: str) -> str:
    """A name of ``rec`` for a container's status, the "Image:" a user reads: the first of
    ``asked`` that is one of its tags or digests (normalised, as containerd and CRI-O show
    it), else its first tag or digest, else "" (an image known by its id alone). The
    kubelet creates containers by image id and names the user's image apart
    (ImageSpec.user_specified_image)."""
    for name in asked:
        want = _normalized(name) if image_id(name) is None else None
        if want is not None and (want in rec.repo_tags or want in rec.repo_digests):
            return want
    return next(iter(rec.repo_tags + rec.repo_digests), "")


def _normalized(name: str) -> str | None:
    """``name`` as the store keeps tags and digests (registry and tag filled in), or None when
    it is no image reference."""
    try:
        ref = parse(name).normalize()
    except InvalidReference:
        return None
    return str(ref) if ref.digest is None else f"{ref.name}@{ref.digest}"


class Images:
    def __init__(self, root: Path, registries_conf: Path, pause_image: str = "",
                 client: RegistryClient | None = None) -> None:
        self.store = ImageStore(root)
        self.conf = RegistriesConfWatcher(registries_conf)
        self.client = client or RegistryClient()
        self.pause_image = pause_image
        # Names of the containers using an image id (the runtime sets this): such an image is
        # not removed (CRI-O's behaviour; the kubelet's GC skips it and retries later).
        self.in_use: Callable[[str], list[str]] = lambda image_id: []
        # Told the seconds and registry bytes of each pull that succeeded (the metrics).
        self.on_pulled: Callable[[float, int], None] = lambda seconds, received: None
        self._pulls: SharedTasks[ImageRecord] = SharedTasks()
        self._layer_jobs: SharedTasks[StageClock] = SharedTasks()
        self._slots = FairSlots(default_slots())
        # Layers committed but not yet known to be on disk, and the task syncing them.
        self._to_sync: set[str] = set()
        self._syncing: asyncio.Task[None] | None = None
        self._inotify: Inotify | None = None

    def load(self) -> None:
        self.store.load()

    def watch(self) -> None:
        """Pick up images that ``pycri image import`` records while the daemon runs (the
        records are renamed into place, so a finished one shows up as IN_MOVED_TO)."""
        self._inotify = Inotify()
        self._inotify.add_watch(self.store.records, IN_MOVED_TO)
        asyncio.get_running_loop().add_reader(self._inotify.fd, self._on_records)

    def _on_records(self) -> None:
        assert self._inotify is not None
        for ev in self._inotify.read_events():
            if ev.name.endswith(".json") and not ev.name.startswith("."):
                rec = self.store.load_record(self.store.records / ev.name)
                if rec is not None:
                    log.debug("image record %s (re)loaded", rec.id)

    async def close(self) -> None:
        if self._syncing is not None:
            await asyncio.shield(self._syncing)  # a clean stop leaves every layer synced
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
        await self.client.close()

    # Lookups --------------------------------------------------------------------------------
    def resolve(self, spec: str) -> ImageRecord | None:
        """By id (with or without sha256:), unique id prefix, tag or repo digest."""
        if not spec:
            return None
        full = image_id(spec)
        if full is not None and full in self.store.images:
            return self.store.images[full]
        want = _normalized(spec)
        if want is not None:
            for rec in self.store.images.values():
                if want in rec.repo_tags or want in rec.repo_digests:
                    return rec
        if looks_like_id_prefix(spec):
            prefix = spec if spec.startswith("sha256:") else f"sha256:{spec}"
            found = [r for i, r in self.store.images.items() if i.startswith(prefix)]
            if len(found) == 1:
                return found[0]
        return None

    def is_pinned(self, rec: ImageRecord) -> bool:
        if not self.pause_image:
            return False
        pause = self.resolve(self.pause_image)
        return pause is not None and pause.id == rec.id

    def remove(self, spec: str) -> list[Path]:
        """Idempotent: an image that is not there is already removed. Returns the freed layer
        trees, out of the store already, for the caller to ``purge`` off the event loop."""
        rec = self.resolve(spec)
        if rec is None:
            return []
        users = self.in_use(rec.id)
        if users:
            raise FailedPrecondition(
                f"image {spec} ({rec.id}) is in use by container {', '.join(sorted(users))}")
        freed = self.store.delete(rec)
        log.info("image %s removed (tags %s)", rec.id, ", ".join(rec.repo_tags) or "-")
        return freed

    # Pulls ----------------------------------------------------------------------------------
    def _candidates(self, image: str) -> list[Reference]:
        try:
            ref = parse(image)
        except InvalidReference as exc:
            raise InvalidArgument(str(exc)) from exc
        if ref.domain:
            return [ref.normalize()]
        search = self.conf.current().unqualified_search_registries() or [DEFAULT_DOMAIN]
        return [ref.with_domain(d).normalize() for d in search]

    async def pull(self, image: str, creds: Credentials, deadline: float | None = None
                   ) -> ImageRecord:
        """Pull ``image``; callers asking for the same reference share one pull. ``deadline``
        (seconds) bounds this caller's wait; the pull is cancelled when nobody waits any more."""
        candidates = self._candidates(image)
        key = f"{image}\0{creds.identity}"
        try:
            async with asyncio.timeout(deadline):
                return await self._pulls.run(
                    key, lambda: self._measured(self._pull(image, candidates, creds)))
        except TimeoutError as exc:
            raise DeadlineExceeded(f"pulling {image} did not finish before the deadline") from exc

    async def _measured(self, pull: Coroutine[Any, Any, ImageRecord]) -> ImageRecord:
        """``pull`` (run as the shared pull's task) timed, its registry bytes counted."""
        meter = pull_meter.start()
        start = time.monotonic()
        rec = await pull
        self.on_pulled(time.monotonic() - start, meter.received)
        return rec

    async def _pull(self, image: str, candidates: list[Reference], creds: Credentials
                    ) -> ImageRecord:
        tried: list[str] = []
        unavailable: RegistryError | None = None
        for cand in candidates:
            try:
                endpoints = self.conf.current().endpoints(cand.name,
                                                          by_digest=cand.digest is not None)
            except BlockedRegistry as exc:
                raise FailedPrecondition(f"pulling {image}: {exc}") from exc
            for ep in endpoints:
                tried.append(ep.location)
                try:
                    fetched = await self.client.manifest(ep, cand.digest or cand.tag or "latest",
                                                         creds)
                except RegistryNotFound:
                    continue
                except RegistryUnavailable as exc:
                    unavailable = exc
                    log.warning("pulling %s: %s", image, exc)
                    continue
                except RegistryAuthError as exc:
                    raise FailedPrecondition(f"pulling {image} from {ep.host}: {exc}") from exc
                except mf.ManifestError as exc:
                    raise Internal(f"pulling {image} from {ep.host}: {exc}") from exc
                return await self._pull_from(ep, cand, fetched.body, fetched.media_type,
                                             fetched.digest, creds)
        if unavailable is not None:
            raise Unavailable(f"pulling {image}: registry unavailable ({unavailable})")
        raise NotFound(f"image {image} not found (tried {', '.join(tried)})")

    async def _pull_from(self, ep: Endpoint, cand: Reference, body: bytes, media_type: str,
                         repo_digest: str, creds: Credentials) -> ImageRecord:
        start = time.monotonic()
        try:
            if cand.digest and repo_digest != cand.digest:
                raise mf.DigestMismatch(f"{ep.location} served {repo_digest} for {cand.digest}")
            parsed = mf.parse_manifest(body, media_type)
            if isinstance(parsed, mf.Index):
                desc = mf.select_platform(parsed)
                got = await self.client.manifest(ep, desc.digest, creds)
                mf.verify_digest(got.body, desc.digest)
                body = got.body
                parsed = mf.parse_manifest(body, got.media_type)
                if not isinstance(parsed, mf.Manifest):
                    raise mf.ManifestError("an index entry points at another index")
            manifest_digest = mf.digest_of(body)
            if parsed.config.size > mf.MAX_MANIFEST_BYTES:
                raise mf.ManifestError(f"image config is {parsed.config.size} bytes, over the cap")
            config = await self._small_blob(ep, parsed.config, creds)
            cfg = mf.parse_image_config(config)
            # Foreign layers are image layers too (they have diff_ids); they are pulled from
            # the registry when it has them, see _check_foreign.
            layers = [d for d in parsed.layers if d.media_type in mf.LAYER_TYPES or d.foreign]
            if len(layers) != len(cfg.diff_ids):
                raise mf.ManifestError(f"{len(layers)} layers but {len(cfg.diff_ids)} diff_ids")
            chain = chain_ids(cfg.diff_ids)
            await self._check_foreign(ep, cand, layers, chain, creds)
        except mf.ManifestError as exc:
            raise Internal(f"pulling {cand}: {exc}") from exc
        except RegistryNotFound as exc:
            raise NotFound(f"pulling {cand}: {exc}") from exc
        except (RegistryUnavailable, RegistryAuthError) as exc:
            raise Unavailable(f"pulling {cand}: {exc}") from exc
        self.store.pin(chain)
        try:
            # A TaskGroup, not gather: when one layer fails the others are cancelled and
            # waited for, so nothing of the failed pull is still being written afterwards.
            jobs = []
            try:
                async with asyncio.TaskGroup() as tg:
                    for i, layer in enumerate(layers):
                        if not self.store.has_layer(chain[i]):
                            jobs.append(tg.create_task(self._layer(
                                ep, layer, chain[i], cfg.diff_ids[i], creds, str(cand))))
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None
            size = sum(self.store.layer_size(c) for c in chain)  # measured at commit
            rec = self._record(cand, parsed.config.digest, manifest_digest, repo_digest, chain,
                               size, cfg.user)
            self.store.put_blob(manifest_digest, body)
            self.store.put_blob(parsed.config.digest, config)
            self.store.save(rec)
        finally:
            self.store.unpin(chain)
        self._sync_soon([c for c in chain if self.store.unsynced(c)])
        log.info("pulled %s as %s: %d layers, %.1f MB in %.2fs", cand, rec.id, len(chain),
                 size / 1e6, time.monotonic() - start)
        if stages.ENABLED:
            totals = stages.summed([j.result() for j in jobs])
            totals["pull"] = round(time.monotonic() - start, 4)
            log.info("pull stages of %s: %s", cand, json.dumps(totals))
        return rec

    def _sync_soon(self, chain: list[str]) -> None:
        """Layers a pull committed reach the disk after the pull has answered (see
        ImageStore.commit_layer); pulls finishing meanwhile share the next syncfs."""
        self._to_sync.update(chain)
        if self._to_sync and (self._syncing is None or self._syncing.done()):
            self._syncing = asyncio.ensure_future(self._sync_loop())

    async def _sync_loop(self) -> None:
        while self._to_sync:
            batch = set(self._to_sync)
            self._to_sync.clear()
            try:
                await asyncio.to_thread(self.store.sync_layers, batch)
            except OSError as exc:  # the layers stay marked: dropped after a crash
                log.warning("syncing %d layers: %s", len(batch), exc)

    def _record(self, cand: Reference, config_digest: str, manifest_digest: str,
                repo_digest: str, chain: list[str], size: int, user: str) -> ImageRecord:
        rec = self.store.images.get(config_digest) or ImageRecord(
            id=config_digest, config_digest=config_digest, manifest_digest=manifest_digest,
            chain_ids=chain, size=size, user=user, pulled_at=time.time_ns())
        tag = str(Reference(cand.domain, cand.path, cand.tag)) if cand.tag else None
        digest_ref = f"{cand.name}@{repo_digest}"
        if tag is not None:
            for other in self.store.images.values():  # a tag names one image at a time
                if other.id != rec.id and tag in other.repo_tags:
                    other.repo_tags.remove(tag)
                    self.store.save(other)
            if tag not in rec.repo_tags:
                rec.repo_tags.append(tag)
        if digest_ref not in rec.repo_digests:
            rec.repo_digests.append(digest_ref)
        return rec

    async def _check_foreign(self, ep: Endpoint, cand: Reference, layers: list[mf.Descriptor],
                             chain: list[str], creds: Credentials) -> None:
        """Fail before any download when a foreign layer is missing from the registry.

        A foreign (non-distributable) layer names URLs to fetch it from, but registries and
        mirrors often hold it anyway: it is then pulled like any other. pycri never fetches
        from a manifest's URLs (that would send the node to any host an image names), so a
        missing one ends the pull with a message that says so rather than a bare 404."""
        for desc, chain_id in zip(layers, chain, strict=True):
            if not desc.foreign or self.store.has_layer(chain_id):
                continue
            try:
                present = await self.client.blob_exists(ep, desc.digest, creds)
            except (RegistryUnavailable, RegistryAuthError):
                raise
            except RegistryError as exc:
                # An answer that is neither yes nor no (a redirect to storage refusing HEAD,
                # an odd status): the download asks again and reports what it gets.
                log.info("pulling %s: checking foreign layer %s: %s", cand, desc.digest, exc)
                continue
            if not present:
                raise FailedPrecondition(foreign_layer_message(desc, str(cand)))

    async def _small_blob(self, ep: Endpoint, desc: mf.Descriptor, creds: Credentials) -> bytes:
        verifier = mf.DigestVerifier(desc.digest, desc.size)
        data = bytearray()
        async for chunk in self.client.blob(ep, desc.digest, creds):
            verifier.update(chunk)
            data += chunk
        verifier.finish()
        return bytes(data)

    async def _layer(self, ep: Endpoint, desc: mf.Descriptor, chain_id: str, diff_id: str,
                     creds: Credentials, image: str) -> StageClock:
        # Shared by chain id: a pull of another image that needs this layer waits for this
        # job, whose errors name the image of the pull that started it.
        return await self._layer_jobs.run(
            chain_id, lambda: self._fetch_layer(ep, desc, chain_id, diff_id, creds, image))

    async def _fetch_layer(self, ep: Endpoint, desc: mf.Descriptor, chain_id: str, diff_id: str,
                           creds: Credentials, image: str) -> StageClock:
        """Download the layer straight into its unpacker, in a worker thread (or, where the
        registry client must do the download, through a pipe to one): no temp copy of the
        blob, and a pull costs about the longer of downloading and unpacking, not their sum.
        Committed only once the blob's digest and size, and the unpacked tar's diff_id, are
        checked."""
        tmp = self.store.new_tmp()
        clock = stages.new_clock()
        try:
            async with self._slots.slot(image):
                for attempt in range(1, BLOB_ATTEMPTS + 1):
                    unpacked = tmp / f"diff-{attempt}"
                    unpacked.mkdir(mode=0o755)
                    try:
                        stats = await self._download_and_unpack(ep, desc, unpacked, creds, clock)
                        break
                    except RegistryUnavailable as exc:
                        if attempt == BLOB_ATTEMPTS:
                            raise Unavailable(f"layer {desc.digest}: {exc}") from exc
                        log.warning("layer %s: %s; retrying (%d/%d)", desc.digest, exc, attempt,
                                    BLOB_ATTEMPTS)
                        await _in_thread(functools.partial(shutil.rmtree, unpacked, True))
                        await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # back-off
                    except mf.DigestMismatch as exc:
                        raise Internal(f"layer {desc.digest}: {exc}") from exc
                    except RegistryNotFound as exc:
                        if desc.foreign:
                            raise FailedPrecondition(foreign_layer_message(desc, image)) from exc
                        raise NotFound(f"layer {desc.digest}: {exc}") from exc
                    except LayerTooLarge as exc:
                        raise InvalidArgument(f"layer {desc.digest} of {image} is too large to "
                                              f"unpack: {exc}") from exc
                    except UnsafeLayer as exc:
                        raise FailedPrecondition(f"layer {desc.digest} refused: {exc}") from exc
            if stats.diff_id != diff_id:
                raise Internal(f"layer {desc.digest} unpacks to {stats.diff_id}, "
                               f"but the image config says {diff_id}")
            committing = time.perf_counter()
            await _in_thread(lambda: self.store.commit_layer(chain_id, unpacked))
            clock.add("commit", time.perf_counter() - committing)
            return clock
        finally:
            # Waited for even when cancelled meanwhile (a sibling layer failed, the caller
            # gave up): the pull reports its end only once its temp dir is gone.
            await _in_thread(functools.partial(shutil.rmtree, tmp, True))

    async def _download_and_unpack(self, ep: Endpoint, desc: mf.Descriptor, dest: Path,
                                   creds: Credentials, clock: StageClock) -> LayerStats:
        """One attempt, in a worker thread that does the GET itself where it can."""
        req = self.client.blob_request(ep, desc.digest, creds)
        if req is None:
            return await self._download_and_unpack_piped(ep, desc, dest, creds)
        for answered_401 in (False, True):
            fetch = LayerFetch(req, desc, dest, clock)
            try:
                return await _in_thread(fetch.run, fetch.stop)
            except BlobStatus as exc:
                if exc.status == 401 and not answered_401:
                    # A token to get (or renew): the client answers the challenge.
                    req = await self.client.reauthorized(ep, req, exc.www_authenticate, creds)
                    continue
                raise self.client.status_error(exc.status, ep, f"blob {desc.digest}") from None
        raise AssertionError("unreachable")

    async def _download_and_unpack_piped(self, ep: Endpoint, desc: mf.Descriptor, dest: Path,
                                         creds: Credentials) -> LayerStats:
        """One attempt through the registry client, for what a worker thread cannot fetch
        itself (an https:// or socks proxy, a test's own transport): the blob is verified as it
        goes through the pipe. A download error
        (digest or size included) wins over the truncated stream it leaves the unpacker; the
        unpacker's own error wins over the broken pipe it leaves the download."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        reader = io.FileIO(read_fd, "rb")  # closed below, whether its thread ran or not
        try:
            with contextlib.suppress(OSError):  # fewer, larger hand-offs; the default works too
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            os.set_blocking(write_fd, False)
            stop = threading.Event()

            def work() -> LayerStats:
                # Closed as soon as the unpacker is done, so a download it no longer reads
                # fails with a broken pipe instead of waiting for room in the pipe.
                with reader:
                    stream = cast(BinaryIO, _StoppableFile(reader, stop))
                    return unpack_image_layer(stream, dest, media_type=desc.media_type)

            unpacking = asyncio.ensure_future(_in_thread(work, stop.set))
            try:
                verifier = mf.DigestVerifier(desc.digest, desc.size)
                last_log = time.monotonic()
                # Once the unpacker stops reading (it refused the layer), the rest is only
                # hashed: bytes damaged on the way are reported as such, not as a bad layer.
                piped = True
                async for chunk in self.client.blob(ep, desc.digest, creds):
                    verifier.update(chunk)
                    if piped:
                        try:
                            await write_all(write_fd, chunk)
                        except BrokenPipeError:
                            piped = False
                    if time.monotonic() - last_log > PROGRESS_EVERY:
                        last_log = time.monotonic()
                        log.info("layer %s: %d of %d bytes", desc.digest[:19], verifier.seen,
                                 desc.size)
                verifier.finish()
                if not piped:
                    await unpacking  # the blob is what it should be: the unpacker's error
                    raise UnsafeLayer("the tar stream ended before the blob did")
                os.close(write_fd)  # the end of the stream, which the unpacker reads up to
                write_fd = -1
                return await unpacking
            except BaseException:
                stop.set()
                if write_fd >= 0:
                    os.close(write_fd)  # wakes a read waiting for more
                    write_fd = -1
                unpacking.cancel()
                try:
                    await until_done(unpacking)
                finally:
                    if not unpacking.cancelled():
                        unpacking.exception()  # retrieved: the error raised here is the one
                raise
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            reader.close()
