"""More of what a kubelet / kubectl user observes through the streaming server: terminal resize
(SPDY and WebSocket v5), the v5 stdin CLOSE signal, a client vanishing mid-exec, many
port-forward connections at once on one SPDY connection, tokens that do not (or no longer)
exist, no fd or child-process leak over hundreds of sessions, and attach with stdin."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path

import pytest
from wsproto.events import (
    BytesMessage,
)

from cri.api import api_pb2
from tests.e2e.containers import Pod, wait_until
from tests.e2e.helpers import Daemon
from tests.e2e.stream_clients import SPDY_EXEC, WAIT, SpdyClient, WsClient, spdy_session, upgrade
from tests.e2e.test_streaming import exec_url

pytestmark = pytest.mark.e2e

def abort(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: the client vanished (killed kubectl, dead node)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker`` (this test process excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the direct children of ``pid``, zombies included."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid:
            out.append((int(entry.name), comm))
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def spdy_status(c: SpdyClient, err: int) -> dict[str, object]:
    c.pump(lambda: err in c.closed)
    status = json.loads(bytes(c.data[err]))
    assert isinstance(status, dict)
    return status


# --- resize ------------------------------------------------------------------------------------

# runc relays a resize to the container's pty on its own schedule (a signal to it, then an
# ioctl), not in order with the stdin it relays: a shell may read the line before the size is
# there. What a user sees is that the size arrives, so the shell waits for it (for at most 5 s).
STTY_WHEN_RESIZED = (b'for i in $(seq 50); do [ "$(stty size)" = "45 123" ] && break; '
                     b"sleep 0.1; done; stty size; exit\n")


def test_resize_over_spdy_reaches_the_tty(pod: Pod) -> None:
    ctr = pod.run("r", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["sh"], stdin=True, tty=True)
    c = spdy_session(url, SPDY_EXEC)
    err = c.open({"streamtype": "error"})
    out = c.open({"streamtype": "stdout"})
    stdin = c.open({"streamtype": "stdin"})
    resize = c.open({"streamtype": "resize"})
    c.conn.send_data(resize, json.dumps({"Width": 123, "Height": 45}).encode())
    c.conn.send_data(stdin, STTY_WHEN_RESIZED)
    c.flush()
    status = spdy_status(c, err)
    c.pump(lambda: out in c.closed)
    c.sock.close()
    assert b"45 123" in bytes(c.data[out])
    assert status["status"] == "Success"


def test_resize_over_websocket_v5_reaches_the_tty(pod: Pod) -> None:
    ctr = pod.run("r", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["sh"], stdin=True, tty=True)
    c = WsClient.connect(url)
    c.send(4, json.dumps({"Width": 123, "Height": 45}).encode())
    c.send(0, STTY_WHEN_RESIZED)
    c.run_to_close()
    assert b"45 123" in c.channel(1)
    assert json.loads(c.channel(3))["status"] == "Success"


def test_a_tty_has_a_size_before_any_resize(pod: Pod) -> None:
    """Full-screen programs and ``stty size`` need rows and columns from their first instant."""
    ctr = pod.run("r", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["stty", "size"], stdin=False, tty=True)
    c = WsClient.connect(url)
    c.run_to_close()
    assert c.channel(1).strip() == b"24 80"
    assert json.loads(c.channel(3))["status"] == "Success"


# --- stdin half-close ----------------------------------------------------------------------------


def test_websocket_v5_close_signal_ends_stdin(pod: Pod) -> None:
    ctr = pod.run("c", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["cat"], stdin=True)
    c = WsClient.connect(url)
    data = b"line one\nline two without newline"
    c.send(0, data)
    c.sock.sendall(c.ws.send(BytesMessage(b"\xff\x00")))  # CLOSE stdin
    # Without the CLOSE, cat waits for more input and the session never closes.
    c.run_to_close()
    assert c.channel(1) == data
    assert json.loads(c.channel(3))["status"] == "Success"


# --- client gone -------------------------------------------------------------------------------


def test_exec_is_killed_when_the_client_vanishes(pod: Pod) -> None:
    marker = "876543"
    ctr = pod.run("k", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["sh", "-c", f"echo started; exec sleep {marker}"])
    c = spdy_session(url, SPDY_EXEC)
    c.open({"streamtype": "error"})
    out = c.open({"streamtype": "stdout"})
    c.pump(lambda: b"started" in c.data[out])
    # Polled, not read once: while sh execs sleep, the kernel shows an empty command line.
    wait_until("the exec'd sleep running while the client is there",
               lambda: bool(host_pids_with(marker)), WAIT)
    abort(c.sock)
    wait_until(f"no process with {marker} in its command line", lambda: not host_pids_with(marker),
               WAIT)
    # The container itself is untouched.
    assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING


# --- port-forward --------------------------------------------------------------------------------


def test_concurrent_port_forwards_on_one_connection(pod: Pod) -> None:
    pod.run("web", ["sh", "-c", "echo hello > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"])
    url = str(pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id, port=[8080]),
                                 timeout=10).url)
    c = spdy_session(url, "portforward.k8s.io")
    get = b"GET /index.html HTTP/1.0\r\n\r\n"
    request = 0

    def pair() -> tuple[int, int]:
        nonlocal request
        request += 1
        err = c.open({"streamtype": "error", "port": "8080", "requestid": str(request)})
        data = c.open({"streamtype": "data", "port": "8080", "requestid": str(request)})
        return err, data

    # httpd may not listen yet: retry one connection until it answers.
    deadline = time.monotonic() + WAIT
    while True:
        err, data = pair()
        c.conn.send_data(data, get)
        c.flush()
        c.pump(lambda d=data, e=err: d in c.closed or e in c.closed)
        if b"hello" in bytes(c.data[data]):
            break
        assert time.monotonic() < deadline, bytes(c.data[err])
    pairs = [pair() for _ in range(5)]
    # Every connection is open before any request is sent: they are served side by side.
    for _, data in pairs:
        c.conn.send_data(data, get)
    c.flush()
    c.pump(lambda: all(d in c.closed for _, d in pairs))
    c.sock.close()
    for err, data in pairs:
        body = bytes(c.data[data])
        assert body.startswith(b"HTTP/1.") and b" 200 " in body.split(b"\r\n")[0], body
        assert body.endswith(b"hello\n"), body
        assert not c.data[err], bytes(c.data[err])


# --- tokens --------------------------------------------------------------------------------------


def _status_of(url: str) -> int:
    sock, code, _ = upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                   ("X-Stream-Protocol-Version", SPDY_EXEC)])
    sock.close()
    return code


def test_invented_and_spent_tokens_answer_404(pod: Pod) -> None:
    ctr = pod.run("t", ["sleep", "1000"])
    base = exec_url(pod, ctr, ["true"]).rsplit("/", 2)[0]
    for kind in ("exec", "attach", "portforward"):
        assert _status_of(f"{base}/{kind}/{'A' * 43}") == 404, kind

    # A real exec token presented under another kind is refused and spent: the command never runs.
    url = exec_url(pod, ctr, ["touch", "/tmp/ran"])
    token = url.rsplit("/", 1)[1]
    assert _status_of(f"{base}/attach/{token}") == 404
    assert _status_of(url) == 404
    assert pod.exec(ctr, ["test", "-e", "/tmp/ran"]).exit_code == 1

    # An attach token works once.
    url = str(pod.rt.Attach(api_pb2.AttachRequest(container_id=ctr, stdout=True), timeout=10).url)
    c = spdy_session(url, SPDY_EXEC)
    c.sock.close()
    assert _status_of(url) == 404
    assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING


# --- leaks ---------------------------------------------------------------------------------------


def test_sequential_exec_sessions_leak_no_fds_or_children(pod: Pod, daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    ctr = pod.run("l", ["sleep", "1000"])
    # One gRPC channel for all Exec calls: a channel per call would hold a daemon fd each
    # until the client side garbage-collects it, which is the test's leak, not the daemon's.
    rt = pod.rt

    def session() -> None:
        url = str(rt.Exec(api_pb2.ExecRequest(container_id=ctr, cmd=["true"], stdout=True),
                          timeout=10).url)
        c = spdy_session(url, SPDY_EXEC)
        err = c.open({"streamtype": "error"})
        c.open({"streamtype": "stdout"})
        assert spdy_status(c, err)["status"] == "Success"
        c.sock.close()

    def runc_children() -> list[tuple[int, str]]:
        return [(p, comm) for p, comm in children(pid) if comm.startswith("runc")]

    for _ in range(20):
        session()
    wait_until("runc children of the daemon to go", lambda: not runc_children(), WAIT)
    warm = fd_count(pid)
    for _ in range(1000):
        session()
    wait_until("runc children of the daemon to go", lambda: not runc_children(), WAIT)
    # A few fds may legitimately be in flight (the last connection closing, a log rotation).
    after = fd_count(pid)
    assert after - warm <= 10, f"daemon fds: {warm} after warm-up, {after} after 1000 sessions"


# --- attach --------------------------------------------------------------------------------------


def _attach_echo(pod: Pod, ctr: str, line: bytes) -> None:
    url = str(pod.rt.Attach(api_pb2.AttachRequest(container_id=ctr, stdin=True, stdout=True),
                            timeout=10).url)
    c = spdy_session(url, SPDY_EXEC)
    c.open({"streamtype": "error"})
    out = c.open({"streamtype": "stdout"})
    stdin = c.open({"streamtype": "stdin"})
    c.conn.send_data(stdin, line)
    c.flush()
    c.pump(lambda: line in c.data[out])
    assert bytes(c.data[out]) == line
    abort(c.sock)


def test_attach_over_spdy_with_stdin_then_detach(pod: Pod) -> None:
    ctr = pod.run("a", ["cat"], stdin=True)
    _attach_echo(pod, ctr, b"hi\n")
    # Detaching leaves the container running: a second attach still reaches the same cat.
    _attach_echo(pod, ctr, b"again\n")
    assert pod.status(ctr).status.state == api_pb2.ContainerState.CONTAINER_RUNNING
