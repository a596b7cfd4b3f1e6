"""The image store: content-addressed, crash-safe, shared layers.

Layout under ``<root>/images``:
  blobs/sha256/<hex>        manifests and configs, by digest
  layers/<chain-hex>/diff   one unpacked layer per chain id, shared by every image that has it
  layers/<chain-hex>/link   the layer's short name; l/<short> -> ../layers/<chain-hex>/diff
                            keeps overlay lowerdir strings short enough for 100+ layers
  layers/<chain-hex>/unsynced  the boot id the layer was written in, until its files are
                            known to be on disk (see commit_layer)
  records/<id-hex>.json     one image: written last, so an image exists only when complete
  tmp/                      downloads and unpacks in progress; emptied at start-up

Layer reference counts are derived from the image records (never stored), so they cannot drift.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cri.store.durable import syncfs, write_atomic, write_json
from sandbox import diskusage

log = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def chain_ids(diff_ids: list[str] | tuple[str, ...]) -> list[str]:
    """OCI image-spec ChainIDs: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n))."""
    out: list[str] = []
    for diff in diff_ids:
        if not out:
            out.append(diff)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


@dataclass
class ImageRecord:
    id: str  # sha256:<config digest hex>, the image id every CRI runtime reports
    config_digest: str
    manifest_digest: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    chain_ids: list[str] = field(default_factory=list)
    size: int = 0  # bytes of the unpacked layers
    user: str = ""
    pulled_at: int = 0


def purge(trees: list[Path]) -> None:
    """Delete the trees ``collect_garbage`` took out of the store."""
    for tree in trees:
        shutil.rmtree(tree, ignore_errors=True)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.links = root / "l"
        self.records = root / "records"
        self.tmp = root / "tmp"
        self.images: dict[str, ImageRecord] = {}
        # Bytes and inodes of each layer, measured once when it is committed: ImageFsInfo and
        # image sizes come from here instead of walking the trees on every call.
        self.usage: dict[str, tuple[int, int]] = {}
        # Layers an unfinished pull has made or relies on: not garbage though no image has them.
        self.pinned: dict[str, int] = {}

    def pin(self, chain: list[str]) -> None:
        for c in chain:
            self.pinned[c] = self.pinned.get(c, 0) + 1

    def unpin(self, chain: list[str]) -> None:
        for c in chain:
            left = self.pinned.get(c, 0) - 1
            if left > 0:
                self.pinned[c] = left
            else:
                self.pinned.pop(c, None)

    # Start-up -------------------------------------------------------------------------------
    def open(self) -> None:
        """Dirs made and records read, nothing cleaned: safe beside a running daemon."""
        for d in (self.blobs, self.layers, self.links, self.records, self.tmp):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in self.layers.iterdir():
            if (d / "link").exists():
                self._layer_usage(d.name)
        for path in sorted(self.records.glob("*.json")):
            self.load_record(path)

    def load(self) -> None:
        """The daemon's start-up: ``open``, then clean what a killed daemon left in flight."""
        self.layers.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._drop_unsynced()
        self.open()
        if not self._import_running():
            for entry in self.tmp.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
        purge(self.collect_garbage())

    # Blobs ----------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.split(":", 1)[1]

    def put_blob(self, digest: str, data: bytes) -> None:
        path = self.blob_path(digest)
        if not path.exists():
            write_atomic(path, data)

    def get_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # Layers ---------------------------------------------------------------------------------
    def layer_dir(self, chain_id: str) -> Path:
        return self.layers / chain_id.split(":", 1)[1]

    def has_layer(self, chain_id: str) -> bool:
        return (self.layer_dir(chain_id) / "link").exists()

    def new_tmp(self) -> Path:
        path = self.tmp / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        return path

    def commit_layer(self, chain_id: str, unpacked: Path) -> bool:
        """Move a fully unpacked layer into place; ``link`` written last marks it complete.
        False if the layer was there already.

        The layer's files are not fsynced here (neither containerd, unless its CRI plugin's
        image_pull_with_sync_fs is set, nor CRI-O's containers/storage sync a layer before
        committing it): that would put the disk's write-back of every layer on the pull's
        path. Instead ``unsynced`` (made durable before ``link``) holds the boot id until
        ``sync_layers`` has had the filesystem write them out, after the pull. A machine
        that goes down before that boots with layers whose ``unsynced`` names another boot:
        ``load`` drops them (and the images using them), rather than run containers on
        files that may be empty. A daemon restart alone (same boot) loses nothing."""
        final = self.layer_dir(chain_id)
        if self.has_layer(chain_id):
            shutil.rmtree(unpacked, ignore_errors=True)
            return False
        shutil.rmtree(final, ignore_errors=True)  # an incomplete earlier attempt
        final.mkdir(mode=0o700)
        os.rename(unpacked, final / "diff")
        usage = diskusage.usage(final / "diff")
        write_json(final / "usage.json", list(usage))
        write_atomic(final / "unsynced", boot_id().encode())
        short = secrets.token_hex(6)
        os.symlink(f"../layers/{final.name}/diff", self.links / short)
        write_atomic(final / "link", short.encode())
        self.usage[final.name] = usage
        return True

    def unsynced(self, chain_id: str) -> bool:
        return (self.layer_dir(chain_id) / "unsynced").exists()

    def sync_layers(self, chain: list[str] | set[str]) -> None:
        """Have the store's filesystem write out everything (one syncfs, not an fsync per
        file), then mark ``chain``'s layers as on disk. A layer removed meanwhile is skipped."""
        syncfs(self.layers)
        for c in chain:
            (self.layer_dir(c) / "unsynced").unlink(missing_ok=True)

    def _drop_unsynced(self) -> None:
        """Layers written in an earlier boot and never synced: removed, so records that use
        them are dropped when read (their images are pulled again)."""
        now = boot_id()
        for d in self.layers.iterdir():
            try:
                written_in = (d / "unsynced").read_text().strip()
            except OSError:
                continue
            if written_in != now:
                log.warning("layer %s was not yet on disk when the machine went down (boot %s); "
                            "removing it", d.name, written_in or "?")
                with contextlib.suppress(OSError):
                    (self.links / (d / "link").read_text()).unlink(missing_ok=True)
                shutil.rmtree(d, ignore_errors=True)

    def lowerdir(self, chain: list[str]) -> str:
        """The overlay lowerdir for an image (topmost layer first), through the short links;
        used relative to the store root (mount with cwd = root) it stays short."""
        return ":".join(
            f"l/{(self.layer_dir(c) / 'link').read_text()}" for c in reversed(chain)
        )

    def layer_size(self, chain_id: str) -> int:
        return self._layer_usage(chain_id.split(":", 1)[1])[0]

    def _layer_usage(self, hexid: str) -> tuple[int, int]:
        known = self.usage.get(hexid)
        if known is None:
            try:
                raw = json.loads((self.layers / hexid / "usage.json").read_bytes())
                known = (int(raw[0]), int(raw[1]))
            except (OSError, ValueError, TypeError, IndexError):
                known = diskusage.usage(self.layers / hexid / "diff")
            self.usage[hexid] = known
        return known

    def store_usage(self) -> tuple[int, int]:
        """(bytes, inodes) of the whole store: layers from memory, the small rest walked."""
        used = inodes = 0
        for d in (self.blobs, self.records):
            b, i = diskusage.usage(d)
            used, inodes = used + b, inodes + i
        for hexid in list(self.usage):
            b, i = self.usage[hexid]
            used, inodes = used + b, inodes + i
        return used, inodes

    # Images ---------------------------------------------------------------------------------
    def save(self, rec: ImageRecord) -> None:
        write_json(self.records / f"{rec.id.split(':', 1)[1]}.json", dataclasses.asdict(rec))
        self.images[rec.id] = rec

    def delete(self, rec: ImageRecord) -> list[Path]:
        """The image gone; returns its freed layers' trees for ``purge`` (see collect_garbage)."""
        (self.records / f"{rec.id.split(':', 1)[1]}.json").unlink(missing_ok=True)
        self.images.pop(rec.id, None)
        return self.collect_garbage()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held by an offline import for its whole run: the daemon collects no garbage then,
        so layers an import has committed but not yet recorded are not taken for garbage."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _import_running(self) -> bool:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def load_record(self, path: Path) -> ImageRecord | None:
        try:
            rec = ImageRecord(**json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable image record %s: %s", path, exc)
            return None
        if not all(self.has_layer(c) for c in rec.chain_ids):
            log.warning("image %s misses layers; dropping it", rec.id)
            path.unlink(missing_ok=True)
            return None
        self.images[rec.id] = rec
        return rec

    def collect_garbage(self) -> list[Path]:
        """Remove layers and blobs no image refers to any more (not while an import runs).

        A freed layer leaves ``layers/`` at once (renamed into ``tmp/``, where start-up clears
        what a killed daemon left), so no pull or mount can find it any more; deleting its tree
        (seconds for a large one) is left to the caller, ``purge``, off the event loop."""
        if self._import_running():
            return []
        used_layers = {c.split(":", 1)[1] for r in self.images.values() for c in r.chain_ids}
        used_layers |= {c.split(":", 1)[1] for c in self.pinned}
        used_blobs = {d.split(":", 1)[1] for r in self.images.values()
                      for d in (r.config_digest, r.manifest_digest)}
        doomed: list[Path] = []
        for d in self.layers.iterdir():
            if d.name not in used_layers:
                link = d / "link"
                if link.exists():
                    (self.links / link.read_text()).unlink(missing_ok=True)
                freed = self.tmp / f"freed-{d.name}-{secrets.token_hex(4)}"
                d.rename(freed)
                doomed.append(freed)
                self.usage.pop(d.name, None)
        for b in self.blobs.iterdir():
            if b.name not in used_blobs and not b.name.startswith("."):
                b.unlink(missing_ok=True)
        return doomed
