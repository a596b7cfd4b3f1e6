"""One layer fetched and unpacked in a worker thread: GET (blob_http), digest and size checked
on the way, decompressed, hashed to its diff_id and written, all from one thread whose every
heavy step is C that lets go of the GIL, so the layers of a pull run on all cores at once.

Error precedence, as for a download through the event loop: damage on the way (digest or
size) wins over the unreadable stream it leaves the unpacker, so once the unpacker refuses a
layer the rest of the blob is still read and hashed; a broken connection is RegistryUnavailable
(the caller retries).
"""

from __future__ import annotations

import threading
from pathlib import Path

from cri.image import manifest as mf
from cri.image import pull_meter
from cri.image.blob_http import BlobBody, open_blob
from cri.image.registry import BlobRequest
from cri.image.stages import StageClock
from cri.image.unpack import LayerStats, UnsafeLayer, unpack_image_stream


class Stopped(Exception):
    """The pull was cancelled (never seen by callers: the cancellation is what they get)."""


class _Damaged(Exception):
    """Carries a DigestMismatch through the unpacker, which takes ValueErrors for bad names."""

    def __init__(self, mismatch: mf.DigestMismatch) -> None:
        super().__init__(str(mismatch))
        self.mismatch = mismatch


class LayerFetch:
    def __init__(self, req: BlobRequest, desc: mf.Descriptor, dest: Path,
                 clock: StageClock) -> None:
        self.req = req
        self.desc = desc
        self.dest = dest
        self.clock = clock
        self._lock = threading.Lock()
        self._stopped = False
        self._body: BlobBody | None = None

    def stop(self) -> None:
        """From any thread: the worker stops at its next read, or now if it waits on one."""
        with self._lock:
            self._stopped = True
            if self._body is not None:
                self._body.abort()

    def run(self) -> LayerStats:
        clock = self.clock
        clock.enter("request")
        try:
            body = open_blob(self.req)
        finally:
            clock.leave()
        with self._lock:
            self._body = body
            if self._stopped:
                body.close()
                raise Stopped("pull cancelled")
        verifier = mf.DigestVerifier(self.desc.digest, self.desc.size)
        stage = ["first_byte"]

        def read() -> bytes:
            if self._stopped:
                raise Stopped("pull cancelled")
            clock.enter(stage[0])
            try:
                data = body.read()
            finally:
                clock.leave()
            stage[0] = "download"
            pull_meter.received(len(data))
            clock.enter("verify")
            try:
                verifier.update(data)
            except mf.DigestMismatch as exc:
                raise _Damaged(exc) from exc
            finally:
                clock.leave()
            return data

        try:
            try:
                stats = unpack_image_stream(read, self.dest, media_type=self.desc.media_type,
                                            clock=clock)
            except UnsafeLayer:
                while read():  # only hashed: was it damaged on the way?
                    pass
                verifier.finish()
                raise
            while read():  # what the decompressor did not need (nothing, usually)
                pass
            verifier.finish()
            return stats
        except _Damaged as exc:
            raise exc.mismatch from None
        finally:
            body.close()
