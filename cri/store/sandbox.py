"""Pod sandboxes: typed records in memory, durable state on disk.

Immutable metadata (written once when the pod is created) is kept apart from the mutable status
(containerd's store/container split), so a status update rewrites one small file. Every list and
status call answers from memory; disk is only written on changes and read at start-up.
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
from cri.store.durable import READ_ERRORS, make_private_dir, read_json, write_atomic, write_json
from cri.store.registrar import IdIndex, NameRegistrar

log = logging.getLogger(__name__)


class SandboxState(enum.Enum):
    READY = "ready"
    NOTREADY = "notready"


# Allowed state changes (a table, so it is testable without sockets). NOTREADY is terminal
# until removal; a READY pod becomes NOTREADY when stopped or when its infra process dies.
TRANSITIONS: dict[SandboxState, frozenset[SandboxState]] = {
    SandboxState.READY: frozenset({SandboxState.READY, SandboxState.NOTREADY}),
    SandboxState.NOTREADY: frozenset({SandboxState.NOTREADY}),
}


@dataclass(frozen=True)
class SandboxMeta:
    id: str
    name: str
    runtime_handler: str
    created_at: int  # ns since the epoch
    run_dir: str  # volatile per-pod dir: bundle, hostname, resolv.conf, shm
    netns_path: str  # "" for host network
    cgroup_parent: str
    cgroup_created: bool  # remove the pod cgroup on RemovePodSandbox only if we made it
    hostname: str
    shm_path: str  # "" when the pod uses the host's IPC namespace
    infra_id: str
    # The configured handler runtime_handler resolved to ("" names the default): the pod and
    # its containers keep it for life. State written before handlers were configurable ran
    # with runc.
    handler: str = "runc"


@dataclass
class SandboxStatus:
    state: SandboxState = SandboxState.READY
    pid: int = 0
    ips: list[str] = field(default_factory=list)
    network_ready: bool = False  # CNI ADD done and not yet undone by DEL
    infra_exit_code: int | None = None
    stopped_at: int = 0


@dataclass
class Sandbox:
    meta: SandboxMeta
    config: api_pb2.PodSandboxConfig
    status: SandboxStatus

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def ready(self) -> bool:
        return self.status.state is SandboxState.READY

    def set_state(self, new: SandboxState) -> None:
        if new not in TRANSITIONS[self.status.state]:
            raise FailedPrecondition(
                f"pod sandbox {self.id}: cannot go from {self.status.state.value} to {new.value}"
            )
        self.status.state = new


def read_sandbox(d: Path) -> tuple[Sandbox, bool]:
    """One sandbox dir as written, read only: (the sandbox, committed). A missing or unreadable
    meta.json or config.pb raises (READ_ERRORS); without a readable status.json (the commit
    marker) the creation never finished: committed is False and the status NOTREADY."""
    meta = SandboxMeta(**read_json(d / "meta.json"))
    config = api_pb2.PodSandboxConfig.FromString((d / "config.pb").read_bytes())
    try:
        raw: dict[str, Any] = read_json(d / "status.json")
        raw["state"] = SandboxState(raw["state"])
        return Sandbox(meta, config, SandboxStatus(**raw)), True
    except READ_ERRORS:
        return Sandbox(meta, config, SandboxStatus(SandboxState.NOTREADY)), False


class SandboxStore:
    """In-memory index of sandboxes backed by <root>/sandboxes/<id>/."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "sandboxes"
        self._pods: dict[str, Sandbox] = {}
        self.ids = IdIndex()
        self.names = NameRegistrar()

    def __iter__(self) -> Iterator[Sandbox]:
        return iter(list(self._pods.values()))

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, ident: str) -> Sandbox | None:
        return self._pods.get(ident)

    def lookup(self, prefix: str) -> Sandbox:
        """By full id or unique prefix; raises NotFound / InvalidArgument."""
        return self._pods[self.ids.resolve(prefix, "pod sandbox")]

    def begin(self, pod: Sandbox) -> None:
        """Write the immutable part before any resource exists. A dir with meta.json but no
        status.json is a creation that never finished: start-up recovery tears it down from
        the paths recorded here, so a crash mid-RunPodSandbox leaks nothing."""
        d = self.dir / pod.id
        make_private_dir(d)
        write_atomic(d / "config.pb", pod.config.SerializeToString())
        write_json(d / "meta.json", dataclasses.asdict(pod.meta))

    def commit(self, pod: Sandbox) -> None:
        """The status file is the commit marker; only then is the pod visible."""
        self.save(pod)
        self._pods[pod.id] = pod
        self.ids.add(pod.id)

    def save(self, pod: Sandbox) -> None:
        status = dataclasses.asdict(pod.status)
        status["state"] = pod.status.state.value
        write_json(self.dir / pod.id / "status.json", status, durable=False)

    def delete(self, pod: Sandbox) -> None:
        shutil.rmtree(self.dir / pod.id, ignore_errors=True)
        self._pods.pop(pod.id, None)
        self.ids.remove(pod.id)
        self.names.release(pod.meta.name)

    def load(self) -> tuple[list[Sandbox], list[Sandbox]]:
        """Read every sandbox back from disk (start-up): (committed, unfinished). Unfinished
        ones are not indexed; the caller tears them down and calls ``discard``."""
        done: list[Sandbox] = []
        unfinished: list[Sandbox] = []
        if not self.dir.is_dir():
            return done, unfinished
        for d in sorted(self.dir.iterdir()):
            try:
                pod, committed = read_sandbox(d)
            except READ_ERRORS as exc:
                # Crashed before any resource was made: nothing to undo but the dir.
                log.warning("discarding incomplete sandbox state %s: %s", d, exc)
                shutil.rmtree(d, ignore_errors=True)
                continue
            if not committed:
                unfinished.append(pod)
                continue
            self._pods[pod.id] = pod
            self.ids.add(pod.id)
            self.names.reserve(pod.meta.name, pod.id)
            done.append(pod)
        return done, unfinished

    def discard(self, ident: str) -> None:
        shutil.rmtree(self.dir / ident, ignore_errors=True)
