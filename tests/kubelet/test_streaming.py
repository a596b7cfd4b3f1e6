"""Exec, attach and port-forward as kubectl reaches them: through the kubelet's streaming proxy
(https on its port), which asks pycri for a URL (Exec/Attach/PortForward) and then either relays
the upgraded connection as it is (SPDY, WebSocket v4) or translates it (WebSocket v5 to SPDY,
SPDY tunnelled in WebSocket) before it reaches pycri's streaming server."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterator

import pytest
from kubernetes.client import V1Pod
from wsproto.events import BytesMessage

from tests.e2e.stream_clients import (
    SPDY_EXEC,
    WS_EXEC,
    SpdyClient,
    WsClient,
    spdy_session,
)
from tests.kubelet.conftest import Node, StaticPods
from tests.kubelet.node import NAMESPACE, NODE, Kubelet
from tests.kubelet.pods import container, pod, poll, running, wait_pod

pytestmark = pytest.mark.kubelet
PAGE = b"hello-from-the-pod"
GET = b"GET /index.html HTTP/1.0\r\n\r\n"


@pytest.fixture(scope="module")
def streams(node: Node) -> Iterator[V1Pod]:
    node.kubelet.ensure()
    pods = StaticPods(node)
    web = f"mkdir /www && echo {PAGE.decode()} > /www/index.html && exec httpd -f -p 8080 -h /www"
    p = pod("streams", container("shell", ["sleep", "1000"]),
            container("echo", ["cat"], stdin=True),
            container("term", ["sh"], stdin=True, tty=True),
            container("web", ["sh", "-c", web]))
    pods.add(p)
    try:
        wait_pod(node.kubelet, "streams", "all running",
                 lambda p: all(running(p, c) for c in ("shell", "echo", "term", "web")))
        # httpd listens once it is running its loop: wait for it through plain exec.
        poll("httpd to answer in the pod", lambda: PAGE.decode() in node.kubelet.run(
            "streams", "shell", "wget -q -O - http://127.0.0.1:8080/index.html"))
        yield p
    finally:
        pods.remove_all()


def url(kubelet: Kubelet, kind: str, ctr: str | None = None, **query: object) -> str:
    path = f"/{kind}/{NAMESPACE}/streams-{NODE}" + (f"/{ctr}" if ctr else "")
    q = urllib.parse.urlencode([(k, v) for k, vs in query.items()
                                for v in (vs if isinstance(vs, list) else [vs])])
    return f"{kubelet.api}{path}" + (f"?{q}" if q else "")


SCRIPT = "read line; echo got $line; echo oops >&2; exit 7"


def exec_url(kubelet: Kubelet, cmd: str, stdin: bool = True) -> str:
    return url(kubelet, "exec", "shell", command=["sh", "-c", cmd], input=int(stdin), output=1,
               error=1)


def assert_exit_7(status: dict[str, object]) -> None:
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode", status
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "7"}]}


def test_exec_over_spdy(kubelet: Kubelet, streams: V1Pod) -> None:
    c = spdy_session(exec_url(kubelet, SCRIPT), SPDY_EXEC)
    err = c.open({"streamType": "error"})
    out = c.open({"streamType": "stdout"})
    errout = c.open({"streamType": "stderr"})
    stdin = c.open({"streamType": "stdin"})
    c.conn.send_data(stdin, b"hello\n", fin=True)
    c.flush()
    c.pump(lambda: err in c.closed and out in c.closed and errout in c.closed)
    assert bytes(c.data[out]) == b"got hello\n"
    assert bytes(c.data[errout]) == b"oops\n"
    assert_exit_7(json.loads(bytes(c.data[err])))


@pytest.mark.parametrize("protocol", [WS_EXEC, "v4.channel.k8s.io"])
def test_exec_over_websocket(kubelet: Kubelet, streams: V1Pod, protocol: str) -> None:
    """v5 is translated by the kubelet to SPDY towards pycri; v4 reaches pycri's WebSocket."""
    c = WsClient.connect(exec_url(kubelet, SCRIPT), protocol)
    c.send(0, b"hello\n")
    c.run_to_close()
    assert c.channel(1) == b"got hello\n"
    assert c.channel(2) == b"oops\n"
    assert_exit_7(json.loads(c.channel(3)))


def attach_url(kubelet: Kubelet) -> str:
    return url(kubelet, "attach", "echo", input=1, output=1, error=0)


def test_attach_over_spdy_and_websocket(kubelet: Kubelet, streams: V1Pod) -> None:
    c = spdy_session(attach_url(kubelet), SPDY_EXEC)
    c.open({"streamType": "error"})
    out = c.open({"streamType": "stdout"})
    stdin = c.open({"streamType": "stdin"})
    c.conn.send_data(stdin, b"over spdy\n")
    c.flush()
    c.pump(lambda: b"over spdy\n" in c.data[out])
    assert bytes(c.data[out]) == b"over spdy\n"
    c.sock.close()
    # Detached: the same cat answers a second client, over WebSocket v5 this time.
    w = WsClient.connect(attach_url(kubelet), WS_EXEC)
    w.send(0, b"over websocket\n")
    w.pump_until(lambda: b"over websocket\n" in w.channel(1))
    assert w.channel(1) == b"over websocket\n"


def forward_over_spdy(c: SpdyClient, request_id: int) -> bytes:
    err = c.open({"streamType": "error", "port": "8080", "requestID": str(request_id)})
    data = c.open({"streamType": "data", "port": "8080", "requestID": str(request_id)})
    c.conn.send_data(data, GET)
    c.flush()
    c.pump(lambda: data in c.closed or err in c.closed)
    assert not c.data[err], bytes(c.data[err])
    return bytes(c.data[data])


def test_port_forward_over_spdy(kubelet: Kubelet, streams: V1Pod) -> None:
    c = spdy_session(url(kubelet, "portForward"), "portforward.k8s.io")
    for request_id in (1, 2):  # two connections through one session
        body = forward_over_spdy(c, request_id)
        assert body.startswith(b"HTTP/1.") and body.endswith(PAGE + b"\n"), body


def test_port_forward_over_websocket(kubelet: Kubelet, streams: V1Pod) -> None:
    """The channel protocol: the port in the query, data on channel 0 and errors on 1, each
    opened by the port number (uint16 little endian)."""
    c = WsClient.connect(url(kubelet, "portForward", port=8080), "v4.channel.k8s.io")
    opened = (8080).to_bytes(2, "little")
    c.pump_until(lambda: c.channel(0)[:2] == opened and c.channel(1)[:2] == opened)
    c.send(0, GET)
    c.pump_until(lambda: PAGE in c.channel(0))
    body = c.channel(0)[2:]
    assert body.startswith(b"HTTP/1.") and body.endswith(PAGE + b"\n"), body
    assert c.channel(1) == opened


class TunnelledSocket:
    """SPDY bytes carried in WebSocket binary messages (kubectl's port-forward since 1.31):
    the part of a socket SpdyClient uses."""

    def __init__(self, target: str) -> None:
        self.ws = WsClient.connect(target, "SPDY/3.1+portforward.k8s.io")

    def sendall(self, data: bytes) -> None:
        self.ws.sock.sendall(self.ws.ws.send(BytesMessage(data)))

    def recv(self, _: int) -> bytes:
        """The next messages' bytes; b"" once the tunnel closed."""
        self.ws.pump_until(lambda: bool(self.ws.frames))
        out = b"".join(self.ws.frames)
        self.ws.frames.clear()
        return out


def test_port_forward_over_spdy_tunnelled_in_websocket(kubelet: Kubelet, streams: V1Pod) -> None:
    c = SpdyClient(TunnelledSocket(url(kubelet, "portForward")))  # type: ignore[arg-type]
    body = forward_over_spdy(c, 1)
    assert body.startswith(b"HTTP/1.") and body.endswith(PAGE + b"\n"), body


def test_run_reads_the_command_from_the_query(kubelet: Kubelet, streams: V1Pod) -> None:
    assert kubelet.run("streams", "shell", "echo via-run") == "via-run\n"


def test_exec_copies_megabytes_both_ways(kubelet: Kubelet, streams: V1Pod) -> None:
    """What kubectl cp does: a tar stream in through stdin, another out through stdout."""
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    digest = hashlib.sha256(payload).hexdigest()
    c = spdy_session(exec_url(kubelet, "cat > /tmp/blob; sha256sum /tmp/blob; cat /tmp/blob"),
                     SPDY_EXEC)
    err = c.open({"streamType": "error"})
    out = c.open({"streamType": "stdout"})
    c.open({"streamType": "stderr"})
    stdin = c.open({"streamType": "stdin"})
    c.conn.send_data(stdin, payload, fin=True)
    c.flush()
    c.pump(lambda: err in c.closed and out in c.closed)
    got = bytes(c.data[out])
    line, _, rest = got.partition(b"\n")
    assert line.split()[0].decode() == digest
    assert rest == payload
    assert json.loads(bytes(c.data[err]))["status"] == "Success"


def test_exec_with_a_terminal_and_resize_over_websocket(kubelet: Kubelet, streams: V1Pod) -> None:
    """v5 through the kubelet's translator: the resize channel reaches pycri as a SPDY resize
    stream and the shell sees the size."""
    target = url(kubelet, "exec", "shell", command="sh", input=1, output=1, tty=1)
    c = WsClient.connect(target, WS_EXEC)
    c.send(4, json.dumps({"Width": 123, "Height": 45}).encode())
    c.send(0, b'for i in $(seq 50); do [ "$(stty size)" = "45 123" ] && break; sleep 0.1; done; '
              b"stty size; exit\n")
    c.run_to_close()
    assert b"45 123" in c.channel(1)
    assert json.loads(c.channel(3))["status"] == "Success"


def test_port_forward_to_a_closed_port_reports_the_error(kubelet: Kubelet, streams: V1Pod
                                                         ) -> None:
    c = spdy_session(url(kubelet, "portForward"), "portforward.k8s.io")
    err = c.open({"streamType": "error", "port": "8081", "requestID": "1"})
    data = c.open({"streamType": "data", "port": "8081", "requestID": "1"})
    c.pump(lambda: err in c.closed and bool(c.data[err]))
    assert b"8081" in bytes(c.data[err]), bytes(c.data[err])
    assert not c.data[data]


def test_attach_to_a_terminal(kubelet: Kubelet, streams: V1Pod) -> None:
    """kubectl attach -it: the container's own shell on its terminal, resized, over SPDY."""
    c = spdy_session(url(kubelet, "attach", "term", input=1, output=1, tty=1), SPDY_EXEC)
    c.open({"streamType": "error"})
    out = c.open({"streamType": "stdout"})
    stdin = c.open({"streamType": "stdin"})
    resize = c.open({"streamType": "resize"})
    c.conn.send_data(resize, json.dumps({"Width": 100, "Height": 30}).encode())
    c.conn.send_data(stdin, b'for i in $(seq 50); do [ "$(stty size)" = "30 100" ] && break; '
                            b"sleep 0.1; done; echo size=$(stty size)\n")
    c.flush()
    c.pump(lambda: b"size=30 100" in c.data[out])
    assert b"size=30 100" in bytes(c.data[out])
