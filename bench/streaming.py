"""Streaming-path costs: ExecSync of `true`, streaming exec of `true` over SPDY, and port-forward
throughput into a pod.

Starts its own daemon and local registry (as the e2e tests do) with a runnable busybox image.
The streaming exec round trip covers everything a kubectl exec pays per command: the Exec RPC,
the HTTP upgrade on the returned URL, opening the error and stdout streams, and reading until
the server closes the error stream (which it does once the exit status is known).
Port-forward pushes a fixed payload into `nc -l` in the pod in 32 KiB data frames; the clock
stops when the server ends the data stream, which it only does after nc (having read all bytes
and then EOF) closed its socket, so the last byte is counted as delivered, not merely queued.

    .venv/bin/python bench/streaming.py [-n 100] [--mib 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.percentiles import print_table
from cri.api import api_pb2
from tests.e2e.containers import Pod, new_pod, pull, remove_pod, start_registry
from tests.e2e.helpers import Daemon
from tests.e2e.test_streaming import SpdyClient, exec_url, spdy_session

CHUNK = 32 * 1024
PORT = 8080


def exec_sync(pod: Pod, ctr: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = pod.exec(ctr, ["true"])
        times.append((time.perf_counter() - t0) * 1e3)
        assert res.exit_code == 0, res
    return times


def exec_spdy(pod: Pod, ctr: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = spdy_session(exec_url(pod, ctr, ["true"]), "v4.channel.k8s.io")
        err = c.open({"streamtype": "error"})
        c.open({"streamtype": "stdout"})
        c.pump(lambda c=c, err=err: err in c.closed)
        times.append((time.perf_counter() - t0) * 1e3)
        c.sock.close()
        # v4 reports success as an empty error stream or a Success status, never a failure.
        assert b"Failure" not in bytes(c.data[err]), bytes(c.data[err])
    return times


def forward_once(c: SpdyClient, request: int, payload: bytes, total: int) -> tuple[float, bytes]:
    """Send ``total`` bytes on a new pair; returns seconds until the server ended the pair and
    whatever came back on the error stream (non-empty: the connection to the pod failed)."""
    headers = {"port": str(PORT), "requestid": str(request)}
    t0 = time.perf_counter()
    err = c.open({"streamtype": "error", **headers})
    data = c.open({"streamtype": "data", **headers})
    sent = 0
    while sent < total:
        chunk = payload[:min(CHUNK, total - sent)]
        sent += len(chunk)
        c.conn.send_data(data, chunk, fin=sent >= total)
        c.flush()
    c.pump(lambda: data in c.closed or err in c.closed)
    return time.perf_counter() - t0, bytes(c.data[err])


def port_forward(pod: Pod, mib: int, rounds: int) -> list[float]:
    # A loop, so every round (and the readiness probe) gets a fresh listener.
    pod.run("sink", ["sh", "-c", f"while true; do nc -l -p {PORT} >/dev/null; done"])
    url = str(pod.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod.id, port=[PORT]),
                                 timeout=10).url)
    c = spdy_session(url, "portforward.k8s.io")
    payload = bytes(range(256)) * (CHUNK // 256)
    total = mib * 1024 * 1024
    request = 0
    rates: list[float] = []
    try:
        while len(rates) < rounds:
            deadline = time.monotonic() + 30
            # Probe with one byte until nc accepts, so a round never meets a refused connection
            # (the loop needs a moment to restart nc after each connection).
            while True:
                request += 1
                _, error = forward_once(c, request, b"x", 1)
                if not error:
                    break
                assert time.monotonic() < deadline, error
                time.sleep(0.05)
            time.sleep(0.2)
            request += 1
            secs, error = forward_once(c, request, payload, total)
            if error:  # nc was not back yet; try the round again
                assert time.monotonic() < deadline + 120, error
                continue
            rates.append(total / secs / 1e6)
    finally:
        c.sock.close()
    return rates


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    daemon = Daemon.new("bench", log_level="info")
    daemon.start()
    reg = None
    try:
        reg, _ = start_registry(daemon)
        pull(daemon)
        with tempfile.TemporaryDirectory() as tmp:
            pod = new_pod(daemon, Path(tmp))
            try:
                ctr = pod.run("sleeper", ["sleep", "100000"])
                exec_sync(pod, ctr, 5)
                results = {"ExecSync true": exec_sync(pod, ctr, args.n)}
                exec_spdy(pod, ctr, 5)
                results["SPDY exec true"] = exec_spdy(pod, ctr, args.n)
                rates = port_forward(pod, args.mib, args.rounds)
            finally:
                remove_pod(pod)
    finally:
        if reg is not None:
            reg.stop()
        daemon.cleanup()
    print(f"{args.n} sequential calls each, after 5 warm-up calls")
    print_table(results)
    print(f"port-forward {args.mib} MiB in {CHUNK // 1024} KiB frames, {args.rounds} rounds (MB = 1e6 B):")
    print("  " + ", ".join(f"{r:.1f}" for r in rates) + f" MB/s; median {statistics.median(rates):.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
