"""Exec, attach and port-forward through the streaming server, with client sides built from the
same sans-IO cores (SPDY client connection, wsproto client): exit codes on the error stream,
stdin and its close, tty, port-forward to a port in the pod and to one nothing listens on,
single-use tokens."""

from __future__ import annotations

import json
import time
import urllib.parse

import grpc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from cri.api import api_pb2
from tests.e2e.containers import Pod
from tests.e2e.helpers import connect
from tests.e2e.stream_clients import WAIT, WsClient, spdy_session, upgrade

pytestmark = pytest.mark.e2e


def exec_url(pod: Pod, ctr: str, cmd: list[str], **kw: bool) -> str:
    req = api_pb2.ExecRequest(container_id=ctr, cmd=cmd, stdout=True, **kw)
    return str(pod.rt.Exec(req, timeout=10).url)


def test_exec_over_spdy_with_stdin_and_exit_code(pod: Pod) -> None:
    ctr = pod.run("s", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["sh", "-c", "read line; echo got $line; echo oops >&2; exit 7"],
                   stdin=True, stderr=True)
    c = spdy_session(url, "v4.channel.k8s.io")
    err = c.open({"streamtype": "error"})
    out = c.open({"streamtype": "stdout"})
    errout = c.open({"streamtype": "stderr"})
    stdin = c.open({"streamtype": "stdin"})
    c.conn.send_data(stdin, b"hello\n", fin=True)
    c.flush()
    c.pump(lambda: err in c.closed and out in c.closed)
    assert bytes(c.data[out]) == b"got hello\n"
    assert bytes(c.data[errout]) == b"oops\n"
    status = json.loads(bytes(c.data[err]))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    c.sock.close()
    # The URL was single use.
    sock, code, _ = upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                   ("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
    sock.close()
    assert code == 404


def test_exec_over_websocket_v5_with_tty(pod: Pod) -> None:
    ctr = pod.run("t", ["sleep", "1000"])
    url = exec_url(pod, ctr, ["sh", "-c", "tty; exit 0"], tty=True)
    u = urllib.parse.urlsplit(url)
    sock = connect(u.hostname, u.port, WAIT)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=u.netloc, target=u.path, subprotocols=["v5.channel.k8s.io"])))
    frames: list[bytes] = []
    closed = False
    deadline = time.monotonic() + WAIT
    while not closed and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        ws.receive_data(data)
        for ev in ws.events():
            if isinstance(ev, AcceptConnection):
                assert ev.subprotocol == "v5.channel.k8s.io"
            elif isinstance(ev, BytesMessage):
                frames.append(bytes(ev.data))
            elif isinstance(ev, CloseConnection):
                closed = True
    sock.close()
    out = b"".join(f[1:] for f in frames if f[:1] == b"\x01")
    status = json.loads(b"".join(f[1:] for f in frames if f[:1] == b"\x03"))
    assert b"/dev/pts/" in out
    assert status["status"] == "Success"


def test_port_forward_reaches_the_pod_and_reports_closed_ports(pod: Pod) -> None:
    pod.run("web", ["sh", "-c", "while true; do echo hi-from-pod | nc -l -p 8080; done"])
    url = str(pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id, port=[8080]),
                                 timeout=10).url)
    c = spdy_session(url, "portforward.k8s.io")
    deadline = time.monotonic() + WAIT
    got = b""
    request = 0
    while b"hi-from-pod" not in got:  # nc may not be listening yet on the first tries
        assert time.monotonic() < deadline, got
        request += 1
        err = c.open({"streamtype": "error", "port": "8080", "requestid": str(request)})
        data = c.open({"streamtype": "data", "port": "8080", "requestid": str(request)})
        c.pump(lambda d=data, e=err: d in c.closed or e in c.closed)  # type: ignore[misc]
        got = bytes(c.data[data])
    request += 1
    err = c.open({"streamtype": "error", "port": "8081", "requestid": str(request)})
    data = c.open({"streamtype": "data", "port": "8081", "requestid": str(request)})
    c.pump(lambda: err in c.closed)
    assert b"error forwarding port 8081" in bytes(c.data[err])
    c.sock.close()


def test_exec_and_port_forward_refuse_what_is_not_running(pod: Pod) -> None:
    ctr = pod.create(pod.container_config("created", ["sleep", "1000"]))
    with pytest.raises(grpc.RpcError) as err:
        exec_url(pod, ctr, ["true"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        pod.rt.Exec(api_pb2.ExecRequest(container_id=ctr, cmd=[]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id="0" * 64), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_port_forward_over_websocket_channels(pod: Pod) -> None:
    """The kubelet's WebSocket port-forward: channel 0 data, 1 error, each opened with the port
    (uint16 little endian); data on channel 0 reaches the pod's port."""
    pod.run("web", ["sh", "-c", "echo hello-ws > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"])
    deadline = time.monotonic() + WAIT
    body = b""
    while b"hello-ws" not in body:  # httpd may not listen yet on the first try
        assert time.monotonic() < deadline, body
        # A URL is good for one connection: each try asks for a new one (a loaded CI host
        # retried a spent one for 30 s).
        url = str(pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id,
                                                                port=[8080]), timeout=10).url)
        u = urllib.parse.urlsplit(url)
        sock = connect(u.hostname, u.port, WAIT)
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host=u.netloc, target=f"{u.path}?port=8080",
                                     subprotocols=["v4.channel.k8s.io"])))
        frames: list[bytes] = []
        sent = closed = False
        while not closed:
            data = sock.recv(65536)
            if not data:
                break
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, BytesMessage):
                    frames.append(bytes(ev.data))
                elif isinstance(ev, CloseConnection):
                    closed = True
            prefixes = [f for f in frames if len(f) == 3 and f[1:] == (8080).to_bytes(2, "little")]
            if len(prefixes) == 2 and not sent:
                sock.sendall(ws.send(BytesMessage(b"\x00GET /index.html HTTP/1.0\r\n\r\n")))
                sent = True
            body = b"".join(f[1:] for f in frames[2:] if f[:1] == b"\x00")
            errors = b"".join(f[1:] for f in frames[2:] if f[:1] == b"\x01")
            if b"hello-ws" in body or errors:
                break
        sock.close()
    assert b"200 OK" in body


def test_websocket_port_forward_takes_the_ports_of_the_request(pod: Pod) -> None:
    """The kubelet's proxy dials the URL with the client's upgrade headers but not its query:
    the ports come from the PortForward request (a WebSocket port-forward through a kubelet
    answered "query parameter 'port' is required")."""
    pod.run("web", ["sh", "-c", "echo hello-req > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"])
    opened = (8080).to_bytes(2, "little")
    deadline = time.monotonic() + WAIT
    while True:  # httpd may not listen yet on the first try; each try needs a new URL
        url = str(pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id,
                                                                port=[8080]), timeout=10).url)
        assert "?" not in url
        c = WsClient.connect(url, "v4.channel.k8s.io")
        c.pump_until(lambda c=c: c.channel(0)[:2] == c.channel(1)[:2] == opened)  # type: ignore[misc]
        assert c.channel(0)[:2] == opened and c.channel(1)[:2] == opened, c.frames
        c.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
        c.pump_until(lambda c=c: b"hello-req" in c.channel(0) or len(c.channel(1)) > 2)  # type: ignore[misc]
        if b"hello-req" in c.channel(0):
            break
        assert time.monotonic() < deadline, c.channel(1)
    assert c.channel(0)[2:].startswith(b"HTTP/1.")


def test_port_forward_refuses_ports_out_of_range(pod: Pod) -> None:
    for port in (0, 65536, -1):
        with pytest.raises(grpc.RpcError) as err:
            pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id, port=[80, port]),
                               timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
