"""Shared pieces of the container e2e tests: a runnable busybox image in a local registry, and
small wrappers that read like what a kubelet does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from cri.api import api_pb2, api_pb2_grpc
from tests.e2e.helpers import Daemon, assert_nothing_left, pod_config, pod_netns
from tests.fixtures.images import Pushed, push_image, runnable_busybox_layers
from tests.fixtures.registry import LocalRegistry

IMAGE = "ctr.test/busybox:latest"
T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    """Poll ``check`` until it returns something truthy, which is returned; AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_registry(daemon: Daemon) -> tuple[LocalRegistry, Pushed]:
    reg = LocalRegistry(daemon.base / "ctr-registry")
    reg.start()
    pushed = push_image(reg, "ctr/busybox", "latest", runnable_busybox_layers(),
                        cmd=["sh"])
    daemon.registries_conf.write_text(
        f'[[registry]]\nprefix = "ctr.test"\nlocation = "{reg.host}/ctr"\ninsecure = true\n')
    return reg, pushed


@contextlib.contextmanager
def serving(d: Daemon, *, pulled: bool = True) -> Iterator[LocalRegistry]:
    """A daemon of a module's own (configured, not started yet) serving, with the runnable
    busybox in a registry and, when ``pulled``, in its store. On the way out, once the module
    ran well, nothing of its pods may be left; then the daemon and the registry go."""
    netns_before = pod_netns()
    reg, _ = start_registry(d)
    try:
        d.start()
        if pulled:
            pull(d)
        yield reg
        assert_nothing_left(d, netns_before)
    finally:
        reg.stop()
        d.cleanup()


def pull(daemon: Daemon, image: str = IMAGE) -> str:
    # registries.conf is reloaded on change; the first pull after writing it may race it.
    deadline = time.monotonic() + 10
    while True:
        try:
            req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))
            return daemon.image().PullImage(req, timeout=60).image_ref
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Pod:
    daemon: Daemon
    id: str
    config: api_pb2.PodSandboxConfig
    log_dir: Path
    containers: list[str] = field(default_factory=list)

    @property
    def rt(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    def container_config(self, name: str, command: list[str] | None = None, **kw: object
                         ) -> api_pb2.ContainerConfig:
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=IMAGE),
            command=command or [],
            log_path=f"{name}.log",
            labels={"name": name},
        )
        for key, value in kw.items():
            if key == "security":
                cfg.linux.security_context.CopyFrom(value)  # type: ignore[arg-type]
            elif key == "resources":
                cfg.linux.resources.CopyFrom(value)  # type: ignore[arg-type]
            elif hasattr(value, "CopyFrom"):
                getattr(cfg, key).CopyFrom(value)
            elif isinstance(value, list):
                getattr(cfg, key).extend(value)
            else:
                setattr(cfg, key, value)
        return cfg

    def create(self, cfg: api_pb2.ContainerConfig) -> str:
        ctr_id = self.rt.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.id, config=cfg, sandbox_config=self.config), timeout=60
        ).container_id
        self.containers.append(ctr_id)
        return ctr_id

    def run(self, name: str, command: list[str], **kw: object) -> str:
        ctr_id = self.create(self.container_config(name, command, **kw))
        self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr_id), timeout=60)
        return ctr_id

    def status(self, ctr_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        return self.rt.ContainerStatus(
            api_pb2.ContainerStatusRequest(container_id=ctr_id, verbose=verbose), timeout=10)

    def wait_exit(self, ctr_id: str, timeout: float = 30) -> api_pb2.ContainerStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(ctr_id).status
            if st.state == api_pb2.ContainerState.CONTAINER_EXITED:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"container {ctr_id} did not exit: {st}")
            time.sleep(0.05)

    def exec(self, ctr_id: str, cmd: list[str], timeout: int = 10) -> api_pb2.ExecSyncResponse:
        return self.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=ctr_id, cmd=cmd,
                                                        timeout=timeout), timeout=timeout + 30)

    def log(self, ctr_id: str) -> str:
        return Path(self.status(ctr_id).status.log_path).read_text()

    def stop(self, ctr_id: str, timeout: int = 0) -> None:
        self.rt.StopContainer(api_pb2.StopContainerRequest(container_id=ctr_id,
                                                           timeout=timeout), timeout=60)

    def remove_container(self, ctr_id: str) -> None:
        self.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=ctr_id), timeout=60)


def new_pod(daemon: Daemon, tmp: Path, runtime_handler: str = "", **kw: object) -> Pod:
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg = pod_config(log_directory=str(log_dir), **kw)
    pod_id = daemon.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(
        config=cfg, runtime_handler=runtime_handler), timeout=60).pod_sandbox_id
    return Pod(daemon, pod_id, cfg, log_dir)


def remove_pod(pod: Pod) -> None:
    rt = pod.rt
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)


def pods(daemon: Daemon, tmp: Path, **kw: object) -> Iterator[Pod]:
    pod = new_pod(daemon, tmp, **kw)
    try:
        yield pod
    finally:
        remove_pod(pod)


# --- helpers of the security and mount e2e tests ---------------------------------------------


def sc(**kw: object) -> api_pb2.LinuxContainerSecurityContext:
    """A container security context as the kubelet sends it: the container's own pid namespace
    unless the test says otherwise, so /proc/1 is the container's main process."""
    kw.setdefault("namespace_options",
                  api_pb2.NamespaceOption(pid=api_pb2.NamespaceMode.CONTAINER))
    return api_pb2.LinuxContainerSecurityContext(**kw)  # type: ignore[arg-type]


def with_caps(add: list[str] | None = None, drop: list[str] | None = None, **kw: object
              ) -> api_pb2.LinuxContainerSecurityContext:
    return sc(capabilities=api_pb2.Capability(add_capabilities=add or [],
                                              drop_capabilities=drop or []), **kw)


def profile(kind: int, ref: str = "") -> api_pb2.SecurityProfile:
    """A seccomp or AppArmor SecurityProfile."""
    return api_pb2.SecurityProfile(profile_type=kind, localhost_ref=ref)  # type: ignore[arg-type]


def start_pod(daemon: Daemon, tmp: Path, cfg: api_pb2.PodSandboxConfig) -> Pod:
    """``new_pod`` for a config the test built itself: nested fields (linux.security_context,
    dns_config) are not settable through ``pod_config`` keywords."""
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_directory = str(log_dir)
    pod_id = daemon.runtime().RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg),
                                            timeout=60).pod_sandbox_id
    return Pod(daemon, pod_id, cfg, log_dir)


def privileged_pod_config() -> api_pb2.PodSandboxConfig:
    cfg = pod_config()
    cfg.linux.security_context.privileged = True
    return cfg


def exec_ok(pod: Pod, ctr_id: str, cmd: list[str]) -> str:
    """stdout of ``cmd`` run with ExecSync, which must exit 0."""
    res = pod.exec(ctr_id, cmd)
    assert res.exit_code == 0, f"{cmd}: exit {res.exit_code}, stdout {res.stdout!r}, " \
                               f"stderr {res.stderr!r}"
    return res.stdout.decode()


def proc_status(pod: Pod, ctr_id: str, pid: str = "self") -> dict[str, str]:
    """/proc/<pid>/status as the container sees it (``self``: the exec'd ``cat`` itself)."""
    out = exec_ok(pod, ctr_id, ["cat", f"/proc/{pid}/status"])
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def daemon_leftovers(daemon: Daemon) -> tuple[int, frozenset[str], int]:
    """What a refused CreateContainer must not change: the containers ListContainers shows, the
    container state dirs on disk, and the mounts under the daemon's root."""
    listed = len(daemon.runtime().ListContainers(api_pb2.ListContainersRequest(),
                                                 timeout=10).containers)
    ctr_dir = daemon.root / "containers"
    dirs = frozenset(p.name for p in ctr_dir.iterdir()) if ctr_dir.exists() else frozenset()
    mounts = sum(str(daemon.root) in line
                 for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return listed, dirs, mounts


def create_refused(pod: Pod, cfg: api_pb2.ContainerConfig) -> grpc.RpcError:
    """CreateContainer of ``cfg`` fails and leaves nothing behind; returns the error."""
    before = daemon_leftovers(pod.daemon)
    try:
        ctr_id = pod.create(cfg)
    except grpc.RpcError as exc:
        err = exc
    else:
        raise AssertionError(f"CreateContainer of {cfg.metadata.name!r} succeeded as {ctr_id}")
    assert daemon_leftovers(pod.daemon) == before
    return err


def push_configured_image(reg: LocalRegistry, name: str, layers: list[bytes],
                          config: dict[str, object]) -> str:
    """Push ``layers`` with an image config of the test's choosing (Env, User, WorkingDir...,
    which ``push_image`` fixes) as ``ctr/<name>:latest``; returns the name to pull it by."""
    import gzip
    import hashlib
    import json

    from cri.image import manifest as m

    repo = f"ctr/{name}"
    blobs, diff_ids = [], []
    for raw in layers:
        gz = gzip.compress(raw, mtime=0)
        blobs.append({"mediaType": m.OCI_LAYER_GZIP, "digest": reg.push_blob(repo, gz),
                      "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    body = json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], **config},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    reg.push_manifest(repo, "latest", {
        "schemaVersion": 2, "mediaType": m.OCI_MANIFEST,
        "config": {"mediaType": m.OCI_CONFIG, "digest": reg.push_blob(repo, body),
                   "size": len(body)},
        "layers": blobs})
    return f"ctr.test/{name}:latest"


# --- helpers of the container runtime and restart e2e tests ----------------------------------


def container_pid(pod: Pod, ctr_id: str) -> int:
    """The container's init pid on the host, from ContainerStatus verbose info."""
    import json

    return int(json.loads(pod.status(ctr_id, verbose=True).info["info"])["pid"])


def conmon_pids(ctr_id: str) -> list[int]:
    """Host pids of the conmon monitoring ``ctr_id`` (its argv has ``-c <id>``)."""
    import subprocess

    out = subprocess.run(["pgrep", "-f", f"conmon .*-c {ctr_id}"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def wait_for_log(pod: Pod, ctr_id: str, text: str, timeout: float = 30) -> str:
    """The container's log once it contains ``text`` (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        log = pod.log(ctr_id)
        if text in log:
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log of {ctr_id}: {log[-2000:]!r}")
        time.sleep(0.05)


def remove_all_images(daemon: Daemon) -> None:
    """Every image in the daemon's store, removed (module teardown)."""
    img = daemon.image()
    for image in img.ListImages(api_pb2.ListImagesRequest(), timeout=30).images:
        img.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image.id)),
                        timeout=30)
