"""Containers: typed records in memory, durable state on disk (the same split as sandboxes).

<root>/containers/<id>/ holds meta.json (immutable), config.pb (the CRI ContainerConfig) and
status.json (the commit marker, rewritten on every state change). The OCI bundle (config.json,
the rootfs mount point, the writable upper layer) lives beside them in bundle/.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri.api import api_pb2
from cri.errors import FailedPrecondition
from cri.store.durable import (
    READ_ERRORS,
    make_private_dir,
    read_json,
    sync_paths,
    write_atomic,
    write_json,
)
from cri.store.registrar import IdIndex, NameRegistrar

log = logging.getLogger(__name__)


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


# A created container may exit without being started (StopContainer, or its pod's infra dying);
# EXITED is final. UNKNOWN is for a container whose runc state vanished (the node rebooted).
TRANSITIONS: dict[ContainerState, frozenset[ContainerState]] = {
    ContainerState.CREATED: frozenset({ContainerState.RUNNING, ContainerState.EXITED,
                                       ContainerState.UNKNOWN}),
    ContainerState.RUNNING: frozenset({ContainerState.EXITED, ContainerState.UNKNOWN}),
    ContainerState.EXITED: frozenset(),
    ContainerState.UNKNOWN: frozenset({ContainerState.EXITED}),
}

STATE_VALUES: dict[ContainerState, api_pb2.ContainerState.ValueType] = {
    ContainerState.CREATED: api_pb2.ContainerState.CONTAINER_CREATED,
    ContainerState.RUNNING: api_pb2.ContainerState.CONTAINER_RUNNING,
    ContainerState.EXITED: api_pb2.ContainerState.CONTAINER_EXITED,
    ContainerState.UNKNOWN: api_pb2.ContainerState.CONTAINER_UNKNOWN,
}


@dataclass(frozen=True)
class ContainerMeta:
    id: str
    name: str
    pod_id: str
    created_at: int  # ns since the epoch
    image: str  # the image as the client named it (ContainerConfig.image.image)
    image_id: str  # sha256:<config digest>
    image_ref: str  # a repo digest of the image when it has one, else its id
    chain_ids: list[str]  # the image's layers, pinned while the container exists
    log_path: str  # "" when the pod has no log directory
    cgroup_path: str
    stop_signal: int
    uid: int
    gid: int
    additional_gids: list[int]
    username: str
    pid_namespace: str  # "container", "pod", "node" or "target"
    image_mounts: dict[str, str] = field(default_factory=dict)  # container path -> image id
    # A name of the image, chosen at create (Images.name_of): ContainerStatus reports it where
    # the client named the image by id ("" in state written before it existed).
    image_name: str = ""
    # The pod's handler (SandboxMeta.handler), kept here too: a container whose pod did not
    # finish being made is torn down at start-up without it.
    handler: str = "runc"


@dataclass
class ContainerStatus:
    state: ContainerState = ContainerState.CREATED
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    # Resources as last applied (UpdateContainerResources changes them): the CRI message,
    # serialised, so ContainerStatus can report it back exactly.
    resources: bytes = b""


@dataclass
class Container:
    meta: ContainerMeta
    config: api_pb2.ContainerConfig
    status: ContainerStatus
    dir: Path
    # This container's entry in a ListContainers reply, encoded; dropped on every save.
    list_entry: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def running(self) -> bool:
        return self.status.state is ContainerState.RUNNING

    def set_state(self, new: ContainerState) -> None:
        if new is not self.status.state and new not in TRANSITIONS[self.status.state]:
            raise FailedPrecondition(
                f"container {self.id}: cannot go from {self.status.state.value} to {new.value}"
            )
        self.status.state = new


def read_container(d: Path) -> tuple[Container, bool]:
    """One container dir as written, read only: (the container, committed), as read_sandbox."""
    meta = ContainerMeta(**read_json(d / "meta.json"))
    config = api_pb2.ContainerConfig.FromString((d / "config.pb").read_bytes())
    try:
        raw: dict[str, Any] = read_json(d / "status.json")
        raw["state"] = ContainerState(raw["state"])
        raw["resources"] = bytes.fromhex(raw.get("resources", ""))
        return Container(meta, config, ContainerStatus(**raw), d), True
    except READ_ERRORS:
        return Container(meta, config, ContainerStatus(), d), False


class ContainerStore:
    """In-memory index of containers backed by <root>/containers/<id>/."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "containers"
        self._ctrs: dict[str, Container] = {}
        self._by_pod: dict[str, dict[str, Container]] = {}
        self.ids = IdIndex()
        self.names = NameRegistrar()

    def __iter__(self) -> Iterator[Container]:
        return iter(list(self._ctrs.values()))

    def __len__(self) -> int:
        return len(self._ctrs)

    def get(self, ident: str) -> Container | None:
        return self._ctrs.get(ident)

    def lookup(self, prefix: str) -> Container:
        """By full id or unique prefix; raises NotFound / InvalidArgument."""
        return self._ctrs[self.ids.resolve(prefix, "container")]

    def of_pod(self, pod_id: str) -> list[Container]:
        return list(self._by_pod.get(pod_id, {}).values())

    def new(self, meta: ContainerMeta, config: api_pb2.ContainerConfig) -> Container:
        return Container(meta, config, ContainerStatus(), self.dir / meta.id)

    def begin(self, ctr: Container) -> None:
        """Write the immutable part before any resource exists: recovery tears down a
        container with meta.json but no status.json.

        Renamed into place but not yet on disk: that is enough for a daemon crash, and
        sync_begin() (run alongside `runc create`, awaited before commit) adds the machine
        crash without four fsyncs on the create path.
        """
        make_private_dir(ctr.dir)
        write_atomic(ctr.dir / "config.pb", ctr.config.SerializeToString(), durable=False)
        write_json(ctr.dir / "meta.json", dataclasses.asdict(ctr.meta), durable=False)

    def sync_begin(self, ctr: Container) -> None:
        sync_paths([ctr.dir / "config.pb", ctr.dir / "meta.json", ctr.dir, self.dir])

    def update_meta(self, ctr: Container) -> None:
        """Rewrite meta.json (the identity is only known once the rootfs is mounted)."""
        # Not durable: the first meta.json (begin) already records what to clean up.
        write_json(ctr.dir / "meta.json", dataclasses.asdict(ctr.meta), durable=False)

    def commit(self, ctr: Container) -> None:
        self.save(ctr)
        self._index(ctr)

    def _index(self, ctr: Container) -> None:
        self._ctrs[ctr.id] = ctr
        self._by_pod.setdefault(ctr.meta.pod_id, {})[ctr.id] = ctr
        self.ids.add(ctr.id)

    def save(self, ctr: Container) -> None:
        ctr.list_entry = None
        status = dataclasses.asdict(ctr.status)
        status["state"] = ctr.status.state.value
        status["resources"] = ctr.status.resources.hex()
        write_json(ctr.dir / "status.json", status, durable=False)

    def delete(self, ctr: Container) -> None:
        shutil.rmtree(ctr.dir, ignore_errors=True)
        self._ctrs.pop(ctr.id, None)
        pod = self._by_pod.get(ctr.meta.pod_id)
        if pod is not None:
            pod.pop(ctr.id, None)
            if not pod:
                del self._by_pod[ctr.meta.pod_id]
        self.ids.remove(ctr.id)
        self.names.release(ctr.meta.name)

    def discard(self, ident: str) -> None:
        shutil.rmtree(self.dir / ident, ignore_errors=True)

    def load(self) -> tuple[list[Container], list[Container]]:
        """Read every container back (start-up): (committed, unfinished)."""
        done: list[Container] = []
        unfinished: list[Container] = []
        if not self.dir.is_dir():
            return done, unfinished
        for d in sorted(self.dir.iterdir()):
            try:
                ctr, committed = read_container(d)
            except READ_ERRORS as exc:
                log.warning("discarding incomplete container state %s: %s", d, exc)
                shutil.rmtree(d, ignore_errors=True)
                continue
            if not committed:
                unfinished.append(ctr)
                continue
            self._index(ctr)
            self.names.reserve(ctr.meta.name, ctr.id)
            done.append(ctr)
        return done, unfinished
