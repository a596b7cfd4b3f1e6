"""Container mounts through a real daemon, as the container and the host see them: bind mounts
(read-write, read-only, recursive read-only, symlinked and missing host paths, the latter
created), mount propagation in both directions, the pod's /etc/hostname, /etc/resolv.conf and
/dev/shm, and image volumes."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import (
    Pod,
    create_refused,
    exec_ok,
    new_pod,
    privileged_pod_config,
    pull,
    push_configured_image,
    remove_pod,
    start_pod,
)
from tests.e2e.helpers import Daemon, pod_config
from tests.fixtures.images import tar_layer
from tests.fixtures.registry import LocalRegistry

pytestmark = pytest.mark.e2e
P = api_pb2.MountPropagation
SC = api_pb2.LinuxContainerSecurityContext
INVALID = grpc.StatusCode.INVALID_ARGUMENT
SLEEP = ["sleep", "1000"]
OWN_PID = api_pb2.NamespaceOption(pid=api_pb2.NamespaceMode.CONTAINER)


@pytest.fixture
def priv_pod(daemon: Daemon, image: str, tmp_path: Path) -> Iterator[Pod]:
    pod = start_pod(daemon, tmp_path, privileged_pod_config())
    try:
        yield pod
    finally:
        remove_pod(pod)


def run(pod: Pod, name: str, mounts: list[api_pb2.Mount], **kw: object) -> str:
    kw.setdefault("security", SC(namespace_options=OWN_PID))
    return pod.run(name, SLEEP, mounts=mounts, **kw)


def sh(pod: Pod, ctr: str, script: str) -> str:
    return exec_ok(pod, ctr, ["sh", "-c", script]).strip()


def fails_read_only(pod: Pod, ctr: str, script: str) -> bool:
    res = pod.exec(ctr, ["sh", "-c", script])
    return res.exit_code != 0 and b"Read-only file system" in res.stderr


def host(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def unmount_all(path: Path) -> None:
    """Everything mounted at or below ``path``, deepest first; lazily when still busy."""
    targets = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    ours = [t for t in targets if t == str(path) or t.startswith(f"{path}/")]
    for target in sorted(ours, key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)


@contextlib.contextmanager
def own_mount(path: Path, propagation: str) -> Iterator[Path]:
    """``path`` as a mount point of its own with the given propagation (``/`` stays as it is)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        host("mount", "--bind", str(path), str(path))
        host("mount", f"--make-{propagation}", str(path))
        yield path
    finally:
        unmount_all(path)


@contextlib.contextmanager
def tmpfs_at(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        host("mount", "-t", "tmpfs", "e2e-tmpfs", str(path))
        yield path
    finally:
        unmount_all(path)


def runtime_supports_rro(daemon: Daemon) -> bool:
    status = daemon.runtime().Status(api_pb2.StatusRequest(), timeout=10)
    return any(h.features.recursive_read_only_mounts for h in status.runtime_handlers
               if h.name == "")


# --- bind mounts ----------------------------------------------------------------------------


def test_bind_mounts_read_write_and_read_only(pod: Pod, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    for d in (rw, ro):
        d.mkdir()
        (d / "from-host").write_text(f"{d.name} content\n")
    mounts = [api_pb2.Mount(host_path=str(rw), container_path="/rw"),
              api_pb2.Mount(host_path=str(ro), container_path="/ro", readonly=True)]
    ctr = run(pod, "binds", mounts)
    assert sh(pod, ctr, "cat /rw/from-host /ro/from-host") == "rw content\nro content"
    sh(pod, ctr, "echo from-ctr > /rw/new")
    assert (rw / "new").read_text() == "from-ctr\n"
    # Changes on the host show up at once: it is the same directory, not a copy.
    (rw / "later").write_text("later\n")
    assert sh(pod, ctr, "cat /rw/later") == "later"
    assert fails_read_only(pod, ctr, "echo x > /ro/new")
    assert fails_read_only(pod, ctr, "echo x > /ro/from-host")
    assert not (ro / "new").exists()
    reported = pod.status(ctr).status.mounts
    assert [(m.container_path, m.host_path, m.readonly) for m in reported] == [
        ("/rw", str(rw), False), ("/ro", str(ro), True)]


def test_read_only_bind_mount_is_not_recursive(pod: Pod, tmp_path: Path) -> None:
    """Without recursive_read_only only the top mount is read-only (what critest expects of
    ``readonly`` alone): a tmpfs mounted below the host dir stays writable."""
    src = tmp_path / "src"
    with tmpfs_at(src / "tmpfs"):
        ctr = run(pod, "ro", [api_pb2.Mount(host_path=str(src), container_path="/mnt",
                                            readonly=True)])
        assert fails_read_only(pod, ctr, "touch /mnt/top")
        sh(pod, ctr, "touch /mnt/tmpfs/file")
        assert (src / "tmpfs" / "file").exists()


def test_recursive_read_only_mount(pod: Pod, daemon: Daemon, tmp_path: Path) -> None:
    if not runtime_supports_rro(daemon):
        pytest.skip("the daemon does not report recursive_read_only_mounts (runc without rro)")
    src = tmp_path / "src"
    with tmpfs_at(src / "tmpfs"):
        ctr = run(pod, "rro", [api_pb2.Mount(host_path=str(src), container_path="/mnt",
                                             readonly=True, recursive_read_only=True)])
        assert fails_read_only(pod, ctr, "touch /mnt/top")
        assert fails_read_only(pod, ctr, "touch /mnt/tmpfs/file")
        assert not (src / "tmpfs" / "file").exists()


def test_recursive_read_only_refusals(pod: Pod, daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()

    def rro(**kw: object) -> api_pb2.ContainerConfig:
        m = api_pb2.Mount(host_path=str(src), container_path="/mnt", recursive_read_only=True,
                          **kw)  # type: ignore[arg-type]
        return pod.container_config("rro", SLEEP, mounts=[m])

    bad = [rro(readonly=False),
           rro(readonly=True, propagation=P.PROPAGATION_HOST_TO_CONTAINER),
           rro(readonly=True, propagation=P.PROPAGATION_BIDIRECTIONAL)]
    if not runtime_supports_rro(daemon):
        # A runtime that cannot make a mount read-only all the way down says so rather than
        # silently mounting it writable below the top.
        bad.append(rro(readonly=True))
    for cfg in bad:
        err = create_refused(pod, cfg)
        assert err.code() == INVALID, (cfg.mounts, err.details())


def test_symlinked_host_path_mounts_its_target(pod: Pod, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "marker").write_text("the target\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    ctr = run(pod, "link", [api_pb2.Mount(host_path=str(link), container_path="/data")])
    assert sh(pod, ctr, "cat /data/marker") == "the target"
    sh(pod, ctr, "touch /data/made-inside")
    assert (target / "made-inside").exists()


def test_missing_host_path_is_created(pod: Pod, tmp_path: Path) -> None:
    """A hostPath volume without a type reaches the runtime unchecked (kubeadm's kube-proxy
    mounts /lib/modules so); as with CRI-O and containerd it is created as a directory."""
    missing = tmp_path / "does-not-exist" / "deep"
    # Refused for another reason: nothing is created on the host.
    cfg = pod.container_config("relative", SLEEP, mounts=[
        api_pb2.Mount(host_path=str(missing), container_path="/data"),
        api_pb2.Mount(host_path=str(tmp_path), container_path="data")])
    assert create_refused(pod, cfg).code() == INVALID
    assert not (tmp_path / "does-not-exist").exists()
    ctr = run(pod, "missing", [api_pb2.Mount(host_path=str(missing), container_path="/data")])
    assert missing.is_dir() and (missing.stat().st_mode & 0o777) == 0o755
    sh(pod, ctr, "echo from the container > /data/f")
    assert (missing / "f").read_text() == "from the container\n"
    # A symlink to nothing is refused, and its target not created.
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cfg = pod.container_config("dangling", SLEEP, mounts=[
        api_pb2.Mount(host_path=str(tmp_path / "dangling"), container_path="/data")])
    assert create_refused(pod, cfg).code() == INVALID
    assert not (tmp_path / "nowhere").exists()


# --- propagation ----------------------------------------------------------------------------


def test_propagation_needs_a_shared_host_mount(pod: Pod, tmp_path: Path) -> None:
    with own_mount(tmp_path / "private", "private") as src:
        for prop in (P.PROPAGATION_HOST_TO_CONTAINER, P.PROPAGATION_BIDIRECTIONAL):
            cfg = pod.container_config("prop", SLEEP, mounts=[
                api_pb2.Mount(host_path=str(src), container_path="/vol", propagation=prop)])
            err = create_refused(pod, cfg)
            assert err.code() == INVALID, (prop, err.details())
        # Private propagation needs nothing of the host.
        ctr = run(pod, "prop", [api_pb2.Mount(host_path=str(src), container_path="/vol")])
        assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING


@pytest.mark.parametrize("propagation", [P.PROPAGATION_PRIVATE, P.PROPAGATION_HOST_TO_CONTAINER,
                                         P.PROPAGATION_BIDIRECTIONAL],
                         ids=["private", "host-to-container", "bidirectional"])
def test_mount_propagation(priv_pod: Pod, tmp_path: Path, propagation: int) -> None:
    """A dedicated shared mount point on the host; the privileged container may mount (as in
    critest), so both directions can be tried for every mode."""
    pod = priv_pod
    with own_mount(tmp_path / "shared", "rshared") as src:
        (src / "from-host").mkdir()
        (src / "from-ctr").mkdir()
        ctr = run(pod, "prop", [api_pb2.Mount(host_path=str(src), container_path="/vol",
                                              propagation=propagation)],  # type: ignore[arg-type]
                  security=SC(privileged=True, namespace_options=OWN_PID))
        # Host -> container: a mount made on the host after the container started.
        host("mount", "-t", "tmpfs", "e2e-host", str(src / "from-host"))
        (src / "from-host" / "flag").write_text("host\n")
        seen = sh(pod, ctr, "ls -A /vol/from-host")
        if propagation == P.PROPAGATION_PRIVATE:
            assert seen == ""
        else:
            assert seen == "flag"
            assert sh(pod, ctr, "cat /vol/from-host/flag") == "host"
        # Container -> host.
        sh(pod, ctr, "mount -t tmpfs e2e-ctr /vol/from-ctr && echo ctr > /vol/from-ctr/flag")
        seen_on_host = sorted(p.name for p in (src / "from-ctr").iterdir())
        if propagation == P.PROPAGATION_BIDIRECTIONAL:
            assert seen_on_host == ["flag"]
            assert (src / "from-ctr" / "flag").read_text() == "ctr\n"
        else:
            assert seen_on_host == []


# --- pod files ------------------------------------------------------------------------------


def test_hostname_and_resolv_conf_are_the_pods(daemon: Daemon, image: str, tmp_path: Path) -> None:
    cfg = pod_config()
    cfg.hostname = "e2e-named-host"
    cfg.dns_config.servers.extend(["10.96.0.10", "10.96.0.11"])
    cfg.dns_config.searches.extend(["e2e.svc.cluster.local", "cluster.local"])
    cfg.dns_config.options.extend(["ndots:5"])
    pod = start_pod(daemon, tmp_path, cfg)
    try:
        ctr = run(pod, "files", [])
        assert sh(pod, ctr, "cat /etc/hostname") == "e2e-named-host"
        assert sh(pod, ctr, "hostname") == "e2e-named-host"
        lines = sh(pod, ctr, "cat /etc/resolv.conf").splitlines()
        assert [ln for ln in lines if ln.startswith("nameserver")] == [
            "nameserver 10.96.0.10", "nameserver 10.96.0.11"]
        assert [ln.split()[1:] for ln in lines if ln.startswith("search")] == [
            ["e2e.svc.cluster.local", "cluster.local"]]
        assert any(ln.startswith("options") and "ndots:5" in ln for ln in lines), lines
        # The files are the pod's, bind mounted: a second container sees the same ones.
        other = run(pod, "other", [])
        assert sh(pod, other, "cat /etc/hostname /etc/resolv.conf") == \
            sh(pod, ctr, "cat /etc/hostname /etc/resolv.conf")
    finally:
        remove_pod(pod)


def test_dev_shm_is_shared_within_the_pod(pod: Pod, daemon: Daemon, tmp_path: Path) -> None:
    a = run(pod, "a", [])
    b = run(pod, "b", [])
    sh(pod, a, "echo e2e-shm-token > /dev/shm/token")
    assert sh(pod, b, "cat /dev/shm/token") == "e2e-shm-token"
    other = new_pod(daemon, tmp_path / "other")
    try:
        c = run(other, "c", [])
        assert sh(other, c, "test -e /dev/shm/token && echo yes || echo no") == "no"
    finally:
        remove_pod(other)


# --- image volumes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volume_image(daemon: Daemon, registry: LocalRegistry, image: str) -> tuple[str, str]:
    """An image with nothing but data files; (name, image id as PullImage returned it)."""
    layer = tar_layer({"data/hello.txt": b"hello from the image volume\n",
                       "data/sub/inner.txt": b"inner file\n"})
    name = push_configured_image(registry, "volume", [layer], {})
    return name, pull(daemon, name)


def image_mount(name: str, path: str, sub: str = "", readonly: bool = True) -> api_pb2.Mount:
    return api_pb2.Mount(container_path=path, image=api_pb2.ImageSpec(image=name),
                         image_sub_path=sub, readonly=readonly)


def test_image_volume(pod: Pod, volume_image: tuple[str, str]) -> None:
    name, ref = volume_image
    ctr = run(pod, "vol", [image_mount(name, "/vol"), image_mount(name, "/sub", "data/sub")])
    assert sh(pod, ctr, "cat /vol/data/hello.txt") == "hello from the image volume"
    assert sh(pod, ctr, "ls -A /sub") == "inner.txt"
    assert sh(pod, ctr, "cat /sub/inner.txt") == "inner file"
    assert fails_read_only(pod, ctr, "touch /vol/data/new")
    assert fails_read_only(pod, ctr, "touch /sub/new")
    reported = pod.status(ctr).status.mounts
    assert [(m.container_path, m.image.image, m.image.image_ref, m.image_sub_path)
            for m in reported] == [("/vol", name, ref, ""), ("/sub", name, ref, "data/sub")]
    # The image volume's image is in use: it cannot be removed under the container.
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.image().RemoveImage(api_pb2.RemoveImageRequest(
            image=api_pb2.ImageSpec(image=name)), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_image_volume_refusals(pod: Pod, volume_image: tuple[str, str]) -> None:
    name, _ = volume_image
    cases = [
        (image_mount(name, "/vol", "data/nope"), INVALID),
        (image_mount(name, "/vol", readonly=False), INVALID),
        (image_mount("ctr.test/never-pulled:latest", "/vol"), grpc.StatusCode.NOT_FOUND),
    ]
    for mount, code in cases:
        err = create_refused(pod, pod.container_config("vol", SLEEP, mounts=[mount]))
        assert err.code() == code, (mount, err.details())
