"""pycri under systemd's Type=notify: READY=1 once the CRI answers, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.api import api_pb2
from tests.e2e.helpers import START_TIMEOUT, Daemon, need_root

pytestmark = pytest.mark.e2e


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd gives a Type=notify service: a datagram socket named in NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, str(path)


def _receive(sock: socket.socket, proc: subprocess.Popen[bytes], want: str,
             daemon: Daemon) -> list[str]:
    """Datagrams until one carries ``want``; fails if the daemon exits or the time a daemon
    gets to start passes first."""
    got: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.1)[0]:
            got.append(sock.recv(4096).decode())
            if want in got[-1].splitlines():
                return got
        elif proc.poll() is not None:
            pytest.fail(f"pycri exited with {proc.returncode} before {want}, after {got}:\n"
                        f"{daemon.log_tail()}")
    pytest.fail(f"no {want} from pycri within {START_TIMEOUT} s (got {got}):\n{daemon.log_tail()}")


def test_ready_once_the_cri_answers_and_stopping_on_sigterm(
        notify_socket: tuple[socket.socket, str]) -> None:
    need_root()
    sock, path = notify_socket
    daemon = Daemon.new("notify", log_level="info")
    try:
        proc = daemon.spawn({"NOTIFY_SOCKET": path})
        got = _receive(sock, proc, "READY=1", daemon)
        assert len(got) == 1  # nothing before it
        # At that moment the RPC a kubelet (and Daemon.start) waits for answers at once: the
        # socket serves and recovery is done (before that it is UNAVAILABLE).
        resp = daemon.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10)
        assert list(resp.items) == []
        proc.send_signal(signal.SIGTERM)
        assert "STATUS=shutting down" in _receive(sock, proc, "STOPPING=1", daemon)[-1]
        assert proc.wait(timeout=60) == 0
    finally:
        daemon.cleanup()
