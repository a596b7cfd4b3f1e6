"""Container lifecycle through a real daemon: create/start/stop/remove, exit codes, logs, list
filters, the pod's namespaces, and what StopPodSandbox / RemovePodSandbox do to containers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import IMAGE, Pod, new_pod, remove_pod
from tests.e2e.helpers import Daemon

pytestmark = pytest.mark.e2e
S = api_pb2.ContainerState


def test_lifecycle_exit_code_and_logs(pod: Pod) -> None:
    ctr = pod.create(pod.container_config("c1", ["sh", "-c", "echo out; echo err >&2; exit 3"]))
    st = pod.status(ctr).status
    assert st.state == S.CONTAINER_CREATED and st.created_at > 0 and st.started_at == 0
    assert st.image.image == IMAGE and st.image_id.startswith("sha256:")
    assert st.log_path == str(pod.log_dir / "c1.log")
    pod.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=30)
    st = pod.wait_exit(ctr)
    assert st.exit_code == 3 and st.reason == "Error"
    assert st.started_at > 0 and st.finished_at >= st.started_at
    lines = pod.log(ctr).splitlines()
    # The CRI log format: <RFC3339Nano> <stream> <P|F> <text>
    pattern = re.compile(r"^\S+Z? (stdout|stderr) F (.*)$|^\S+[+-]\d\d:\d\d (stdout|stderr) F (.*)$")
    parsed = sorted((m.group(1) or m.group(3), m.group(2) or m.group(4))
                    for m in map(pattern.match, lines) if m)
    assert parsed == [("stderr", "err"), ("stdout", "out")], lines
    # Starting again is refused; stop and remove are idempotent.
    with pytest.raises(grpc.RpcError) as err:
        pod.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    pod.stop(ctr)
    pod.remove_container(ctr)
    pod.remove_container(ctr)
    with pytest.raises(grpc.RpcError) as err:
        pod.status(ctr)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_exit_zero_is_completed(pod: Pod) -> None:
    ctr = pod.run("ok", ["true"])
    st = pod.wait_exit(ctr)
    assert (st.exit_code, st.reason) == (0, "Completed")


def test_stop_sends_sigterm_then_sigkill(pod: Pod) -> None:
    trap = pod.run("trap", ["sh", "-c", "trap 'echo got-term; exit 7' TERM; "
                                        "while true; do sleep 0.1; done"])
    deaf = pod.run("deaf", ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    assert pod.status(trap).status.state == S.CONTAINER_RUNNING
    pod.stop(trap, timeout=10)
    st = pod.status(trap).status
    assert st.state == S.CONTAINER_EXITED and st.exit_code == 7
    assert "got-term" in pod.log(trap)
    pod.stop(deaf, timeout=1)
    st = pod.status(deaf).status
    assert st.state == S.CONTAINER_EXITED and st.exit_code == 137


def test_list_filters(pod: Pod, daemon: Daemon, tmp_path: Path) -> None:
    a = pod.run("a", ["sleep", "1000"])
    b = pod.create(pod.container_config("b", ["sleep", "1000"]))
    other = new_pod(daemon, tmp_path / "other")
    try:
        c = other.create(other.container_config("c", ["sleep", "1000"]))

        def ids(**f: object) -> set[str]:
            req = api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(**f))
            return {x.id for x in pod.rt.ListContainers(req, timeout=10).containers}

        assert {a, b, c} <= ids()
        assert ids(pod_sandbox_id=pod.id) == {a, b}
        assert ids(pod_sandbox_id=pod.id[:12]) == {a, b}
        assert ids(id=a[:10]) == {a}
        running = api_pb2.ContainerStateValue(state=S.CONTAINER_RUNNING)
        assert ids(pod_sandbox_id=pod.id, state=running) == {a}
        assert ids(label_selector={"name": "c"}) == {c}
    finally:
        remove_pod(other)
    # Removing the pod removed its container.
    with pytest.raises(grpc.RpcError):
        pod.status(c)


def _pid(pod: Pod, ctr: str) -> int:
    return int(json.loads(pod.status(ctr, verbose=True).info["info"])["pid"])


def test_containers_share_the_pods_namespaces(pod: Pod) -> None:
    """net/ipc/uts are the pod's; mnt is always the container's own; pid follows the mode
    (the kubelet sends CONTAINER unless the pod shares its process namespace)."""
    NS = api_pb2.NamespaceMode
    own = api_pb2.LinuxContainerSecurityContext(
        namespace_options=api_pb2.NamespaceOption(pid=NS.CONTAINER))
    shared = api_pb2.LinuxContainerSecurityContext(
        namespace_options=api_pb2.NamespaceOption(pid=NS.POD))
    a = _pid(pod, pod.run("own", ["sleep", "1000"], security=own))
    b = _pid(pod, pod.run("shared", ["sleep", "1000"], security=shared))
    pod_info = json.loads(pod.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
        pod_sandbox_id=pod.id, verbose=True), timeout=10).info["info"])
    infra = pod_info["pid"]

    def ns(pid: int, kind: str) -> str:
        return os.readlink(f"/proc/{pid}/ns/{kind}")

    for kind in ("net", "ipc", "uts"):
        assert ns(a, kind) == ns(b, kind) == ns(infra, kind)
    assert len({ns(a, "mnt"), ns(b, "mnt"), ns(infra, "mnt")}) == 3
    assert ns(a, "pid") != ns(infra, "pid")
    assert ns(b, "pid") == ns(infra, "pid")


def test_stop_pod_stops_its_containers(daemon: Daemon, image: str, tmp_path: Path) -> None:
    pod = new_pod(daemon, tmp_path)
    try:
        ctr = pod.run("s", ["sleep", "1000"])
        pod.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        st = pod.status(ctr).status
        assert st.state == S.CONTAINER_EXITED and st.exit_code == 137
        with pytest.raises(grpc.RpcError) as err:
            pod.create(pod.container_config("late", ["true"]))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        remove_pod(pod)


def test_bad_input_is_refused_and_changes_nothing(pod: Pod) -> None:
    before = len(pod.rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers)
    cases = [
        (pod.container_config("", ["true"]), grpc.StatusCode.INVALID_ARGUMENT),
        (pod.container_config("x", ["true"], image=api_pb2.ImageSpec(image="nope.test/x:1")),
         grpc.StatusCode.NOT_FOUND),
        (pod.container_config("wd", ["true"], working_dir="/proc/self/fd/7"),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for cfg, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            pod.create(cfg)
        assert err.value.code() == code, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        pod.rt.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id="0" * 64, config=pod.container_config("y", ["true"])), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    after = len(pod.rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers)
    assert after == before
    # The name of a refused container is free again.
    ctr = pod.run("wd", ["true"])
    assert pod.wait_exit(ctr).exit_code == 0


def test_same_name_twice_is_refused(pod: Pod) -> None:
    pod.create(pod.container_config("dup", ["true"]))
    with pytest.raises(grpc.RpcError) as err:
        pod.create(pod.container_config("dup", ["true"]))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_image_in_use_cannot_be_removed(pod: Pod, image: str) -> None:
    ctr = pod.create(pod.container_config("user", ["true"]))
    with pytest.raises(grpc.RpcError) as err:
        pod.daemon.image().RemoveImage(api_pb2.RemoveImageRequest(
            image=api_pb2.ImageSpec(image=IMAGE)), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "user" in (err.value.details() or "")
    pod.remove_container(ctr)


def test_container_created_by_image_id_is_shown_by_name(pod: Pod, image: str) -> None:
    """The kubelet creates containers by image id and names the user's image in
    user_specified_image: the status shows the name (kubectl's "Image:"), as containerd and
    CRI-O do, not the id; the image id and digest stay in image_id and image_ref."""
    image_id = pod.daemon.image().ImageStatus(api_pb2.ImageStatusRequest(
        image=api_pb2.ImageSpec(image=IMAGE)), timeout=10).image.id
    cfg = pod.container_config("by-id", ["true"])
    cfg.image.CopyFrom(api_pb2.ImageSpec(image=image_id, user_specified_image=IMAGE))
    ctr = pod.create(cfg)
    st = pod.status(ctr).status
    assert (st.image.image, st.image.user_specified_image) == (IMAGE, IMAGE)
    assert st.image_id == image_id and st.image_ref.startswith("ctr.test/busybox@sha256:")
    listed = pod.rt.ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(id=ctr)), timeout=10).containers
    assert [c.image.image for c in listed] == [IMAGE]
    # Named by id alone (crictl create with an id): a name of the image all the same.
    cfg = pod.container_config("by-id-only", ["true"])
    cfg.image.CopyFrom(api_pb2.ImageSpec(image=image_id))
    assert pod.status(pod.create(cfg)).status.image.image == IMAGE
