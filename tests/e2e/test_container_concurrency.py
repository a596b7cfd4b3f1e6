"""A busy node: many pods and containers created, used and torn down at once, while readers
list and inspect everything, and the kubelet's sync loop and garbage collector race each other
on the same container (Stop and Remove together, Remove twice, a pod removed with containers
still running). Every call either succeeds or gets the answer the CRI allows, and at the end
nothing of it is left: no pod, container, mount, cgroup, veth, lease or state dir."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import Pod, new_pod, remove_pod, wait_until
from tests.e2e.helpers import Daemon, session_leftovers

pytestmark = pytest.mark.e2e
WORKERS = 8
ROUNDS = 3
S = api_pb2.ContainerState


def churn(daemon: Daemon, tmp: Path, worker: int, made: list[str]) -> None:
    for r in range(ROUNDS):
        pod = new_pod(daemon, tmp / f"w{worker}r{r}")
        made.append(pod.id)
        try:
            a = pod.run("a", ["sh", "-c", "echo up; exec sleep 1000"])
            b = pod.run("b", ["sleep", "1000"])
            made += [a, b]
            res = pod.exec(a, ["echo", f"hi {worker}"])
            assert (res.exit_code, res.stdout) == (0, f"hi {worker}\n".encode())
            # The sync loop stops b while the garbage collector removes it, twice.
            with ThreadPoolExecutor(3) as ex:
                calls = [ex.submit(pod.stop, b), ex.submit(pod.remove_container, b),
                         ex.submit(pod.remove_container, b)]
                for call in calls:
                    call.result()  # unknown containers are stopped and removed: no error
            listed = pod.rt.ListContainers(api_pb2.ListContainersRequest(
                filter=api_pb2.ContainerFilter(pod_sandbox_id=pod.id)), timeout=10).containers
            assert [(c.id, c.state) for c in listed] == [(a, S.CONTAINER_RUNNING)]
        finally:
            remove_pod(pod)  # a still runs: the pod's removal stops and removes it


def read_everything(daemon: Daemon, done: threading.Event, errors: list[str],
                    sweeps: list[int]) -> None:
    """ListContainers/ListPodSandbox, stats and statuses of whatever is listed, in a loop.
    A status of something removed since it was listed may be NotFound; nothing else may fail."""
    rt = daemon.runtime()

    def call(fn: Callable[[], object], may_vanish: bool = False) -> None:
        try:
            fn()
        except grpc.RpcError as exc:
            if not (may_vanish and exc.code() == grpc.StatusCode.NOT_FOUND):
                errors.append(f"{exc.code()}: {exc.details()}")

    while not done.is_set():
        sweeps.append(1)
        ctrs = rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers
        pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
        call(lambda: rt.ListContainerStats(api_pb2.ListContainerStatsRequest(), timeout=10))
        call(lambda: rt.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest(), timeout=10))
        for c in ctrs[:6]:
            call(lambda c=c: rt.ContainerStatus(api_pb2.ContainerStatusRequest(  # type: ignore[misc]
                container_id=c.id, verbose=True), timeout=10), may_vanish=True)
        for p in pods[:4]:
            call(lambda p=p: rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(  # type: ignore[misc]
                pod_sandbox_id=p.id), timeout=10), may_vanish=True)


def test_busy_node_churn_leaves_nothing(daemon: Daemon, image: str, tmp_path: Path) -> None:
    start = daemon.log.stat().st_size
    made: list[str] = []
    errors: list[str] = []
    sweeps: list[int] = []
    done = threading.Event()
    reader = threading.Thread(target=read_everything, args=(daemon, done, errors, sweeps))
    reader.start()
    try:
        with ThreadPoolExecutor(WORKERS) as ex:
            for f in [ex.submit(churn, daemon, tmp_path, w, made) for w in range(WORKERS)]:
                f.result()
    finally:
        done.set()
        reader.join(timeout=60)
    assert sweeps and not errors, errors[:10]
    rt = daemon.runtime()
    ctrs = {c.id for c in rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers}
    pods = {p.id for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items}
    assert not (ctrs | pods) & set(made)
    assert len(made) == WORKERS * ROUNDS * 3
    assert not [m for m in made if netns_of(m).exists()]
    assert_no_errors_logged(daemon, start)
    assert session_leftovers(daemon) == []


def test_pod_removed_while_its_containers_are_being_removed(daemon: Daemon, image: str,
                                                            tmp_path: Path) -> None:
    """RemovePodSandbox and RemoveContainer of its containers at the same time: both succeed
    and each container is torn down once."""
    start = daemon.log.stat().st_size
    pod: Pod = new_pod(daemon, tmp_path)
    ctrs = [pod.run(f"c{i}", ["sleep", "1000"]) for i in range(4)]
    with ThreadPoolExecutor(6) as ex:
        calls = [ex.submit(remove_pod, pod)] + [ex.submit(pod.remove_container, c) for c in ctrs]
        calls.append(ex.submit(remove_pod, pod))
        for call in calls:
            call.result()
    assert_no_errors_logged(daemon, start)
    assert session_leftovers(daemon) == []


def netns_of(pod_id: str) -> Path:
    return Path("/var/run/netns") / f"pycri-{pod_id[:16]}"


def log_since(daemon: Daemon, offset: int) -> str:
    with daemon.log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def assert_no_errors_logged(daemon: Daemon, since: int) -> None:
    """Races lost gracefully: no ERROR line and no traceback in the daemon's log."""
    text = log_since(daemon, since)
    bad = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not bad, bad[:10]


def test_kill_9_in_the_middle_of_the_churn_recovers_to_a_clean_node(
        daemon: Daemon, image: str, tmp_path: Path) -> None:
    """The daemon is killed while pods and containers are being created, started and removed
    on several threads. After the restart every pod and container it lists answers its status,
    and removing them all leaves nothing behind: what was half made was torn down."""
    killing = threading.Event()
    enough = threading.Event()
    made: list[str] = []
    pods_made: list[str] = []
    errors: list[str] = []

    def worker(w: int) -> None:
        # Calls go on until the kill makes one fail, so it lands in the middle of them.
        i = 0
        while True:
            try:
                pod = new_pod(daemon, tmp_path / f"k{w}-{i}")
                pods_made.append(pod.id)
                i += 1
                made.append(pod.run("a", ["sleep", "1000"]))
                if i % 2:
                    remove_pod(pod)
            except grpc.RpcError as exc:
                if not killing.is_set():
                    errors.append(f"{exc.code()}: {exc.details()}")
                return
            if len(made) >= 3 * WORKERS:
                enough.set()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(timeout=120), errors
        killing.set()
        daemon.stop(kill=True)
        restarted = daemon.log.stat().st_size
    finally:
        killing.set()
        for t in threads:
            t.join(timeout=120)
        if daemon.proc is None:
            daemon.start()
    assert not errors, errors[:10]
    # Each surviving pod's network is CHECKed after the restart (in the background): healthy.
    wait_until("the network CHECK after the restart",
               lambda: "network checked after restart" in log_since(daemon, restarted), 60)
    rt = daemon.runtime()
    for c in rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers:
        rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=c.id), timeout=10)
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    assert pods, "the pods that were running before the kill are gone"
    for p in pods:
        rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=p.id), timeout=10)
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
    assert rt.ListContainers(api_pb2.ListContainersRequest(), timeout=10).containers == []
    assert "CHECK failed" not in log_since(daemon, restarted)
    # Pods half made or half removed at the kill included: no pinned netns is left.
    assert not [p for p in pods_made if netns_of(p).exists()]
    assert session_leftovers(daemon) == []
