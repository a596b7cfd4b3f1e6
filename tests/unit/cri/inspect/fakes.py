"""Fake /proc, state and cgroup trees for the inspect tests (tmp_path, no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

from cri.api import api_pb2
from cri.store.container import ContainerMeta, ContainerState, ContainerStatus, ContainerStore
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus, SandboxStore

# Field 22 of /proc/PID/stat: a command name with spaces and parentheses, as the kernel may show.
STAT = "{pid} (sle ep) (x)) {state} 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 {start} 20 21\n"


def fake_process(proc: Path, pid: int | str, ns: dict[str, int], cgroup: str = "0::/\n",
                 start: int = 1000, state: str = "S") -> None:
    d = proc / str(pid)
    (d / "ns").mkdir(parents=True)
    for kind, ino in ns.items():
        os.symlink(f"{kind}:[{ino}]", d / "ns" / kind)
    (d / "cgroup").write_text(cgroup)
    (d / "stat").write_text(STAT.format(pid=pid, state=state, start=start))


def write_pod(root: Path, ident: str, *, name: str = "web", namespace: str = "default",
              pid: int = 100, status: bool = True, netns: str = "") -> None:
    """A pod's state as the daemon writes it (its own store), committed unless ``status`` is
    False (a creation a crash interrupted)."""
    cfg = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(
        name=name, namespace=namespace, uid="u1"))
    meta = SandboxMeta(
        id=ident, name=f"k8s_POD_{name}", runtime_handler="", created_at=1, run_dir="/run/x",
        netns_path=netns, cgroup_parent="/kubepods/pod1", cgroup_created=True, hostname=name,
        shm_path="", infra_id=ident, handler="runc")
    pod = Sandbox(meta, cfg, SandboxStatus(SandboxState.READY, pid=pid, ips=["10.0.0.5"]))
    store = SandboxStore(root)
    store.begin(pod)
    if status:
        store.save(pod)


def write_container(root: Path, ident: str, pod_id: str, *, name: str = "app", pid: int = 200,
                    pid_namespace: str = "container", state: str = "running") -> None:
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=name))
    meta = ContainerMeta(
        id=ident, name=f"k8s_{name}", pod_id=pod_id, created_at=1, image="busybox",
        image_id="sha256:" + "0" * 64, image_ref="sha256:" + "0" * 64, chain_ids=[],
        log_path="", cgroup_path=f"/kubepods/pod1/pycri-{ident}", stop_signal=15, uid=0, gid=0,
        additional_gids=[], username="", pid_namespace=pid_namespace, handler="runc")
    store = ContainerStore(root)
    ctr = store.new(meta, cfg)
    ctr.status = ContainerStatus(ContainerState(state), pid=pid)
    store.begin(ctr)
    store.save(ctr)


def write_files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text + "\n")
