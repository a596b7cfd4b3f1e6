"""Container logs as the kubelet serves them (/containerLogs: tailLines, previous, timestamps),
read from the CRI log files pycri's conmon writes, and after the kubelet rotates them (rename,
then ReopenContainerLog)."""

from __future__ import annotations

import contextlib
import gzip
import re
from pathlib import Path

import pytest
from kubernetes.client import V1EmptyDirVolumeSource, V1Pod, V1Volume, V1VolumeMount

from tests.kubelet.conftest import StaticPods
from tests.kubelet.node import NAMESPACE, Kubelet
from tests.kubelet.pods import container, ctr_status, pod, poll, running, wait_log, wait_pod

pytestmark = pytest.mark.kubelet
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def _twice() -> V1Pod:
    """Prints five lines and fails; its second attempt prints them again and stays."""
    cmd = ("for i in 1 2 3 4 5; do echo line-$i; done; "
           "if [ -e /data/again ]; then echo second-run; exec sleep 1000; fi; "
           "touch /data/again; echo first-run; exit 1")
    return pod("logs", container("app", ["sh", "-c", cmd],
                                 volume_mounts=[V1VolumeMount(name="data", mount_path="/data")]),
               volumes=[V1Volume(name="data", empty_dir=V1EmptyDirVolumeSource())])


def test_tail_previous_and_timestamps(kubelet: Kubelet, static_pods: StaticPods) -> None:
    static_pods.add(_twice())
    wait_pod(kubelet, "logs", "running its second attempt",
             lambda p: running(p, "app") and ctr_status(p, "app").restart_count == 1)  # type: ignore[union-attr]
    current = wait_log(kubelet, "logs", "app", "second-run")
    assert current == "".join(f"line-{i}\n" for i in range(1, 6)) + "second-run\n"
    assert kubelet.container_logs("logs", "app", tailLines=2) == "line-5\nsecond-run\n"
    previous = kubelet.container_logs("logs", "app", previous="true")
    assert previous.endswith("line-5\nfirst-run\n") and "second-run" not in previous
    stamped = kubelet.container_logs("logs", "app", timestamps="true", tailLines=1)
    stamp, _, text = stamped.rstrip("\n").partition(" ")
    assert text == "second-run"
    # RFC 3339 with up to nanoseconds, as the CRI log line carries it.
    assert RFC3339.fullmatch(stamp), stamp


def _chatty() -> V1Pod:
    # ~200 bytes a line, numbered: enough to pass the 64 KiB containerLogMaxSize in seconds.
    pad = "x" * 190
    cmd = f"i=0; while true; do i=$((i+1)); echo \"$i {pad}\"; sleep 0.01; done"
    return pod("chatty", container("app", ["sh", "-c", cmd]))


def numbers(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines() if line.split()[:1] != []
            and line.split()[0].isdigit()]


def cri_lines(path: Path) -> str:
    """The messages of a CRI log file (plain or gzipped by the kubelet): the fourth field; ""
    when the kubelet renamed or compressed the file away meanwhile."""
    raw = b""
    with contextlib.suppress(FileNotFoundError):
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    return "".join(line.split(" ", 3)[3] + "\n" for line in raw.decode().splitlines()
                   if line.count(" ") >= 3)


def test_logs_after_the_kubelet_rotates_them(kubelet: Kubelet, static_pods: StaticPods) -> None:
    p = _chatty()
    static_pods.add(p)
    wait_pod(kubelet, "chatty", "running", lambda p: running(p, "app"))
    log_dir = kubelet.pod_logs / f"{NAMESPACE}_chatty-pycri-kubelet_{p.metadata.uid}" / "app"
    current = log_dir / "0.log"

    def rotated_twice() -> int | None:
        """The last line number in the rotated files, once there are two (the second rotation
        also compresses the first file)."""
        rotated = sorted(log_dir.glob("0.log.*"))
        last = max((n for f in rotated for n in numbers(cri_lines(f))), default=0)
        return last if len(rotated) >= 2 and last else None

    last_rotated = poll("two rotated log files", rotated_twice)
    # pycri's conmon reopened the log: the new file goes on past what was rotated.
    poll("new lines in the reopened log",
         lambda: (lambda got: got and got[0] > last_rotated)(numbers(cri_lines(current))))
    # The kubelet reads the current file only (right after a rotation it may hold fewer than
    # three lines): three consecutive lines, past anything rotated.
    tail = poll("three lines in the current log", lambda: (lambda got: got if len(got) == 3
                                                           else None)(numbers(
        kubelet.container_logs("chatty", "app", tailLines=3))))
    assert tail[0] > last_rotated
    assert tail == list(range(tail[0], tail[0] + 3))
