"""What a kubelet makes of pycri's containers over their life: probes, init containers, shared
volumes, restart policies, back-off and OOM kills. The module's pods start together (they are
independent), each test watches its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import (
    V1EmptyDirVolumeSource,
    V1ExecAction,
    V1HostPathVolumeSource,
    V1Lifecycle,
    V1LifecycleHandler,
    V1Pod,
    V1Probe,
    V1Volume,
    V1VolumeMount,
)

from cri.api import api_pb2
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import Kubelet
from tests.kubelet.pods import (
    container,
    cri_containers,
    ctr_status,
    memory_hog,
    oom_killed,
    pod,
    poll,
    ready,
    running,
    wait_log,
    wait_pod,
)

pytestmark = pytest.mark.kubelet


def exec_probe(*cmd: str) -> V1Probe:
    return V1Probe(_exec=V1ExecAction(command=list(cmd)), period_seconds=1, failure_threshold=1)


def scratch(name: str = "data") -> tuple[V1Volume, V1VolumeMount]:
    """An emptyDir: it outlives the container's restarts, so a command can tell its attempts
    apart without any clock."""
    return (V1Volume(name=name, empty_dir=V1EmptyDirVolumeSource()),
            V1VolumeMount(name=name, mount_path=f"/{name}"))


def _liveness() -> V1Pod:
    vol, mount = scratch()
    # The probe's first run ever fails, every later one succeeds (its mark outlives the
    # container): the first attempt is killed by it, the second is healthy from the start.
    probe = exec_probe("sh", "-c", "[ -e /data/probed ] || { touch /data/probed; exit 1; }")
    return pod("liveness", container("app", ["sleep", "1000"], volume_mounts=[mount],
                                     liveness_probe=probe),
               volumes=[vol])


def _readiness() -> V1Pod:
    return pod("readiness", container("app", ["sleep", "1000"],
                                      readiness_probe=exec_probe("cat", "/tmp/ready")))


def _init() -> V1Pod:
    vol, mount = scratch("work")
    steps = [container(f"init-{n}", ["sh", "-c", f"echo {n} >> /work/order"],
                       volume_mounts=[mount]) for n in ("one", "two")]
    app = container("app", ["sh", "-c", "echo app >> /work/order; exec sleep 1000"],
                    volume_mounts=[mount])
    return pod("init", app, init_containers=steps, volumes=[vol])


def _shared() -> V1Pod:
    vol, mount = scratch("shared")
    writer = container("writer", ["sh", "-c", "echo from-writer > /shared/msg; exec sleep 1000"],
                       volume_mounts=[mount])
    reader = container("reader", ["sh", "-c", "until [ -e /shared/msg ]; do sleep 0.1; done; "
                                              "cat /shared/msg; exec sleep 1000"],
                       volume_mounts=[mount])
    return pod("shared", writer, reader, volumes=[vol])


def _exits(name: str, policy: str, code: int) -> V1Pod:
    # The kubelet takes the message of a failed container from the end of its log.
    return pod(name, container("app", ["sh", "-c", f"echo ended with {code}; exit {code}"],
                               termination_message_policy="FallbackToLogsOnError"),
               restart_policy=policy)


def _on_failure() -> V1Pod:
    vol, mount = scratch()
    cmd = "if [ -e /data/failed-once ]; then exit 0; fi; touch /data/failed-once; exit 3"
    return pod("onfailure", container("app", ["sh", "-c", cmd], volume_mounts=[mount]),
               restart_policy="OnFailure", volumes=[vol])


def _crash() -> V1Pod:
    # The kubelet mounts a file of the pod's at /dev/termination-log and reads it back.
    cmd = "echo crashing; echo last words > /dev/termination-log; exit 1"
    return pod("crash", container("app", ["sh", "-c", cmd]))


def _slow_probe(runs: Path) -> V1Pod:
    # Each probe run outlives its 1 s timeout: the kubelet's ExecSync deadline must end it.
    # Every run leaves a line in a host file.
    probe = exec_probe("sh", "-c", "echo run >> /runs/probe; exec sleep 30")
    probe.timeout_seconds = 1
    mount = V1VolumeMount(name="runs", mount_path="/runs")
    return pod("slowprobe", container("app", ["sleep", "1000"], readiness_probe=probe,
                                      volume_mounts=[mount]),
               volumes=[V1Volume(name="runs", host_path=V1HostPathVolumeSource(
                   path=str(runs), type="DirectoryOrCreate"))])


def _missing_image() -> V1Pod:
    return pod("noimage", container("app", ["true"], image="ctr.test/not-pushed:1"))


@pytest.fixture(scope="module")
def started(node: Node) -> Iterator[dict[str, V1Pod]]:
    node.kubelet.ensure()
    pods = StaticPods(node)
    made = [_liveness(), _readiness(), _init(), _shared(), _exits("never-ok", "Never", 0),
            _exits("never-fails", "Never", 3), _on_failure(), _crash(), memory_hog(),
            _slow_probe(node.kubelet.base / "slowprobe"), _missing_image()]
    pods.add(*made)
    try:
        yield {p.metadata.name: p for p in made}
    finally:
        pods.remove_all()


def test_failing_liveness_probe_restarts_the_container(kubelet: Kubelet, node: Node,
                                                       started: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "liveness", "restarted once by its probe, then live and running",
                 lambda p: running(p, "app") and ctr_status(p, "app").restart_count == 1  # type: ignore[union-attr]
                 and ctr_status(p, "app").started)  # type: ignore[union-attr]
    st = ctr_status(p, "app")
    assert st is not None and st.last_state.terminated is not None
    # Killed by the kubelet (SIGTERM ignored by sleep as pid 1, then SIGKILL).
    assert st.last_state.terminated.exit_code == 137
    attempts = cri_containers(node.daemon, started["liveness"].metadata.uid, "app")
    assert [c.metadata.attempt for c in attempts] == [0, 1]
    assert attempts[0].state == api_pb2.ContainerState.CONTAINER_EXITED
    assert attempts[1].state == api_pb2.ContainerState.CONTAINER_RUNNING
    assert st.container_id == f"pycri://{attempts[1].id}"


def test_readiness_probe_toggles_ready(kubelet: Kubelet, started: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "readiness", "running, not ready", lambda p: running(p, "app"))
    assert not ready(p)
    kubelet.run("readiness", "app", "touch /tmp/ready")
    wait_pod(kubelet, "readiness", "ready", ready)
    kubelet.run("readiness", "app", "rm /tmp/ready")
    p = wait_pod(kubelet, "readiness", "not ready again", lambda p: not ready(p))
    st = ctr_status(p, "app")
    assert st is not None and st.restart_count == 0 and st.state.running is not None


def test_init_containers_run_in_order_before_the_app(kubelet: Kubelet,
                                                     started: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "init", "app running", lambda p: running(p, "app"))
    for name in ("init-one", "init-two"):
        st = ctr_status(p, name, init=True)
        assert st is not None and st.state.terminated is not None, name
        assert (st.state.terminated.exit_code, st.state.terminated.reason) == (0, "Completed")
    uid = started["init"].metadata.uid
    order = kubelet.root_dir / "pods" / uid / "volumes/kubernetes.io~empty-dir/work/order"
    assert order.read_text() == "one\ntwo\napp\n"


def test_empty_dir_is_shared_between_containers(kubelet: Kubelet,
                                                started: dict[str, V1Pod]) -> None:
    wait_pod(kubelet, "shared", "both containers running",
             lambda p: running(p, "writer") and running(p, "reader"))
    got = wait_log(kubelet, "shared", "reader", "from-writer")
    assert got == "from-writer\n"


@pytest.mark.parametrize(("name", "phase", "code"), [("never-ok", "Succeeded", 0),
                                                     ("never-fails", "Failed", 3)])
def test_restart_policy_never(kubelet: Kubelet, node: Node, started: dict[str, V1Pod],
                              name: str, phase: str, code: int) -> None:
    p = wait_pod(kubelet, name, phase, lambda p: p.status.phase == phase)
    st = ctr_status(p, "app")
    assert st is not None and st.state.terminated is not None and st.restart_count == 0
    assert st.state.terminated.exit_code == code
    # FallbackToLogsOnError: the log's tail for a failure, nothing for a success.
    assert st.state.terminated.message == (f"ended with {code}\n" if code else None)
    attempts = cri_containers(node.daemon, started[name].metadata.uid, "app")
    assert [(c.metadata.attempt, c.state) for c in attempts] == [
        (0, api_pb2.ContainerState.CONTAINER_EXITED)]


def test_restart_policy_on_failure(kubelet: Kubelet, started: dict[str, V1Pod]) -> None:
    p = wait_pod(kubelet, "onfailure", "Succeeded", lambda p: p.status.phase == "Succeeded")
    st = ctr_status(p, "app")
    assert st is not None and st.restart_count == 1
    assert st.state.terminated is not None and st.state.terminated.exit_code == 0
    assert st.last_state.terminated is not None and st.last_state.terminated.exit_code == 3


def test_exiting_container_is_restarted_with_back_off(kubelet: Kubelet, node: Node,
                                                      started: dict[str, V1Pod]) -> None:
    def backing_off(p: V1Pod) -> bool:
        st = ctr_status(p, "app")
        return bool(st is not None and st.restart_count >= 2 and st.state.waiting is not None
                    and st.state.waiting.reason == "CrashLoopBackOff")

    p = wait_pod(kubelet, "crash", "in CrashLoopBackOff after two restarts", backing_off)
    st = ctr_status(p, "app")
    assert st is not None and "back-off" in (st.state.waiting.message or "")
    assert st.last_state.terminated is not None
    assert (st.last_state.terminated.exit_code, st.last_state.terminated.reason) == (1, "Error")
    assert st.last_state.terminated.message == "last words\n"
    # pycri keeps the exited attempts the kubelet has not removed (the next may be starting).
    attempts = cri_containers(node.daemon, started["crash"].metadata.uid, "app")
    assert any(c.state == api_pb2.ContainerState.CONTAINER_EXITED and c.metadata.attempt >= 1
               for c in attempts), attempts


def test_container_over_its_memory_limit_is_oom_killed(kubelet: Kubelet, node: Node,
                                                       started: dict[str, V1Pod]) -> None:
    wait_pod(kubelet, "oom", "restarted after an OOM kill", oom_killed)
    # The limit the kubelet asked for is the one the kernel enforced (cgroup v1 memory), on
    # every attempt's cgroup (each stays until the container is removed).
    uid = started["oom"].metadata.uid
    pod_cgroups = list(Path("/sys/fs/cgroup/memory").glob(
        f"{kubelet.cgroup_root.lstrip('/')}/kubepods/*/pod{uid}"))
    assert len(pod_cgroups) == 1
    limits: dict[str, int] = {}
    for c in cri_containers(node.daemon, uid, "hog"):
        try:
            limits[c.id] = int(
                (pod_cgroups[0] / f"pycri-{c.id}" / "memory.limit_in_bytes").read_text())
        except FileNotFoundError:
            # The kubelet's container GC may remove a dead attempt at any moment; then its
            # cgroup goes first and the container leaves pycri's list right after.
            poll(f"attempt {c.id} without a cgroup is removed",
                 lambda cid=c.id: all(x.id != cid for x in cri_containers(node.daemon, uid)))
    assert limits and set(limits.values()) == {32 * 1024 * 1024}, limits


def test_probe_that_outlives_its_timeout_is_ended(kubelet: Kubelet,
                                                 started: dict[str, V1Pod]) -> None:
    """A probe command is killed at the probe's timeout (ExecSync answers DeadlineExceeded):
    the container never becomes ready and the timed-out runs do not pile up in it."""
    wait_pod(kubelet, "slowprobe", "running", lambda p: running(p, "app"))
    runs = kubelet.base / "slowprobe" / "probe"
    poll("three probe runs", lambda: runs.exists() and len(runs.read_text().splitlines()) >= 3)
    p = kubelet.pod("slowprobe")
    assert p is not None and not ready(p)
    ps = kubelet.run("slowprobe", "app", "ps -o pid,args")
    # At most the run in progress.
    assert len([line for line in ps.splitlines() if "sleep 30" in line]) <= 1, ps


def test_post_start_and_pre_stop_hooks_run(kubelet: Kubelet, static_pods: StaticPods) -> None:
    """Both hooks run in the container (ExecSync): postStart before the kubelet reports it
    running, preStop when its manifest goes, before the container is stopped."""
    hooks = kubelet.base / f"hooks-{uuid.uuid4().hex[:6]}"

    def hook(name: str) -> V1LifecycleHandler:
        return V1LifecycleHandler(_exec=V1ExecAction(
            command=["sh", "-c", f"echo {name} ran > /hooks/{name}"]))

    # The shell ends on SIGTERM as soon as its current sleep is over.
    app = container("app", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                    lifecycle=V1Lifecycle(post_start=hook("post-start"),
                                          pre_stop=hook("pre-stop")),
                    volume_mounts=[V1VolumeMount(name="hooks", mount_path="/hooks")])
    p = pod("hooks", app, termination_grace_period_seconds=30,
            volumes=[V1Volume(name="hooks", host_path=V1HostPathVolumeSource(
                path=str(hooks), type="DirectoryOrCreate"))])
    static_pods.add(p)
    wait_pod(kubelet, "hooks", "running", lambda p: running(p, "app"))
    assert (hooks / "post-start").read_text() == "post-start ran\n"
    assert not (hooks / "pre-stop").exists()
    kubelet.remove("hooks")
    # The pod leaves the kubelet's list at once; its containers are stopped after.
    pre_stop = hooks / "pre-stop"
    poll("the preStop hook to run",
         lambda: pre_stop.exists() and pre_stop.read_text() == "pre-stop ran\n")


def test_image_that_cannot_be_pulled(kubelet: Kubelet, started: dict[str, V1Pod]) -> None:
    """The registry has no such image: the kubelet shows the pull error, then backs off."""
    def backing_off(p: V1Pod) -> bool:
        st = ctr_status(p, "app")
        return bool(st is not None and st.state.waiting is not None
                    and st.state.waiting.reason == "ImagePullBackOff")

    p = wait_pod(kubelet, "noimage", "in ImagePullBackOff", backing_off)
    st = ctr_status(p, "app")
    assert st is not None and "ctr.test/not-pushed:1" in (st.state.waiting.message or "")
    assert p.status.phase == "Pending"
