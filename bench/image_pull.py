"""PullImage time, throughput, per-stage split and daemon peak RSS, from a local registry.

Starts its own registry (Debian's docker-registry on loopback) and daemon, pushes an image of
the chosen case, then pulls it N times (removing it in between, with the page cache's dirty
pages written out first so one pull's writeback does not land in the next one's time):

- mixed (issue 14, the default): 4 layers x 30 files of 1 MiB random + 1 MiB text each, gzip
  level 6: about 126 MB compressed, 252 MB unpacked.
- mixed-zstd: the same files, zstd level 3.
- random: 4 layers x one 60 MiB file of random data, gzip level 9 (252 MB either way).

``--compare CHECKOUT`` runs the same pulls against a daemon from another checkout (its own
.venv if it has one) in the same run, alternating pull by pull, so both see the same machine:

    .venv/bin/python bench/image_pull.py [-n 3] [--case mixed] [--compare /path/to/checkout]

The per-stage split comes from the daemon's "pull stages" log line (seconds summed over the
layers, so stages that overlap add up to more than the pull); a checkout without it shows none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.percentiles import pct
from cri.api import api_pb2
from tests.e2e.helpers import Daemon
from tests.fixtures.images import push_image, tar_layer
from tests.fixtures.registry import LocalRegistry

MiB = 1 << 20
TEXT = b"".join(f"{i:06d} the quick brown fox jumps over the lazy dog; pack my box with five "
                f"dozen liquor jugs.\n".encode() for i in range(200))
CASES = ("mixed", "mixed-zstd", "random")
STAGES_RE = re.compile(r"pull stages of (\S+): (\{.*\})")


def case_layers(case: str) -> list[bytes]:
    if case == "random":
        return [tar_layer({f"data/blob{i}": os.urandom(60 * MiB)}) for i in range(4)]
    text = (TEXT * (MiB // len(TEXT) + 1))[:MiB]
    return [tar_layer({f"data{i}/file{j:02d}": os.urandom(MiB) + text for j in range(30)})
            for i in range(4)]


class Checkout(Daemon):
    """A daemon run from ``repo`` with that checkout's own Python (its .venv if any)."""

    repo: Path = Path(__file__).resolve().parents[1]

    def spawn(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        python = self.repo / ".venv" / "bin" / "python"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(python) if python.exists() else sys.executable, "-m", "cri", "serve",
                 "--config", str(self.config_path)],
                cwd=self.repo, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYCRI_PULL_STAGES": "1", **(env or {})},
            )
        return self.proc


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


def last_stages(d: Daemon) -> dict[str, float] | None:
    found = None
    for line in d.log.read_text(errors="replace").splitlines():
        m = STAGES_RE.search(line)
        if m:
            found = json.loads(m.group(2))
    return found


class Run:
    def __init__(self, label: str, repo: Path, registry_host: str) -> None:
        self.label = label
        d = Checkout.new("bench", log_level="info")
        d.repo = repo
        d.registries_conf.write_text(
            f'[[registry]]\nprefix = "bench.test"\nlocation = "{registry_host}/bench"\n'
            "insecure = true\n")
        self.d = d
        self.times: list[float] = []
        self.rss: list[float] = []
        self.cpu: list[float] = []  # daemon CPU seconds per pull (load-independent)
        self.registry_cpu: list[float] = []
        self.stages: list[dict[str, float]] = []

    def spy(self, out: Path) -> subprocess.Popen[bytes]:
        assert self.d.proc is not None
        out.mkdir(parents=True, exist_ok=True)
        name = self.label.strip("/").replace("/", "_")
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                                str(self.d.proc.pid), "--threads", "--idle", "--rate", "250",
                                "--format", "raw", "-o", str(out / f"{name}.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # attached before the first pull
        return spy

    def pull(self, spec: api_pb2.ImageSpec, registry_pid: int) -> None:
        assert self.d.proc is not None
        pid = self.d.proc.pid
        img = self.d.image()
        os.sync()
        reset_peak_rss(pid)
        c0, r0 = cpu_seconds(pid), cpu_seconds(registry_pid)
        t0 = time.perf_counter()
        img.PullImage(api_pb2.PullImageRequest(image=spec), timeout=600)
        self.times.append(time.perf_counter() - t0)
        self.cpu.append(cpu_seconds(pid) - c0)
        self.registry_cpu.append(cpu_seconds(registry_pid) - r0)
        self.rss.append(peak_rss_mb(pid))
        stages = last_stages(self.d)
        if stages is not None:
            self.stages.append(stages)
        img.RemoveImage(api_pb2.RemoveImageRequest(image=spec), timeout=60)

    def report(self, compressed: int, unpacked: int) -> None:
        t = self.times
        med = statistics.median(t)
        print(f"[{self.label}] pull s: median {med:.3f}  min {min(t):.3f}  "
              f"p90 {pct(t, 90):.3f}  max {max(t):.3f}  all {' '.join(f'{x:.3f}' for x in t)}")
        print(f"[{self.label}] MB/s at the median: compressed {compressed / 1e6 / med:.0f}  "
              f"unpacked {unpacked / 1e6 / med:.0f}")
        print(f"[{self.label}] daemon peak RSS (VmHWM) during a pull: max {max(self.rss):.1f} MB")
        print(f"[{self.label}] CPU s per pull, median: daemon {statistics.median(self.cpu):.2f}  "
              f"registry {statistics.median(self.registry_cpu):.2f} (a figure the machine's "
              "load changes less)")
        if self.stages:
            keys = list(self.stages[0])
            print(f"[{self.label}] stages, median s summed over layers: " + "  ".join(
                f"{k} {statistics.median(s.get(k, 0.0) for s in self.stages):.3f}"
                for k in keys))
        else:
            print(f"[{self.label}] stages: none logged by this checkout")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--case", choices=CASES, default="mixed")
    ap.add_argument("--compare", type=Path, help="another checkout, pulled alternately")
    ap.add_argument("--py-spy", type=Path, metavar="DIR",
                    help="record each daemon with py-spy (collapsed stacks, per thread) into DIR")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    reg = LocalRegistry(Path(f"/tmp/pycri-bench-registry-{os.getpid()}"))
    reg.start()
    runs: list[Run] = []
    try:
        layers = case_layers(args.case)
        zstd = args.case == "mixed-zstd"
        pushed = push_image(reg, "bench/big", "v1", layers,
                            compression="zstd" if zstd else "gzip",
                            level=3 if zstd else 6 if args.case == "mixed" else 9)
        compressed = sum(int(x) for x in _blob_sizes(reg, pushed.layer_digests))
        unpacked = sum(len(x) for x in layers)
        del layers
        runs.append(Run(str(here), here, reg.host))
        if args.compare is not None:
            runs.append(Run(str(args.compare.resolve()), args.compare.resolve(), reg.host))
        for r in runs:
            r.d.start()
        spies = [r.spy(args.py_spy) for r in runs] if args.py_spy else []
        spec = api_pb2.ImageSpec(image="bench.test/big:v1")
        for _ in range(args.n):
            for r in runs:
                assert reg.proc is not None
                r.pull(spec, reg.proc.pid)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        with contextlib.suppress(OSError):
            load = Path("/proc/loadavg").read_text().split()[:3]
            print(f"load average after the run: {' '.join(load)}")
    finally:
        for r in runs:
            r.d.cleanup()
        reg.stop()
        subprocess.run(["rm", "-rf", str(reg.base)], check=False)
    print(f"image ({args.case}): 4 layers, {compressed / 1e6:.1f} MB compressed, "
          f"{unpacked / 1e6:.1f} MB unpacked; {args.n} pulls each")
    for r in runs:
        r.report(compressed, unpacked)
    if len(runs) == 2:
        a, b = (statistics.median(r.times) for r in runs)
        print(f"median ratio {runs[0].label} / {runs[1].label}: {a / b:.2f}")
    return 0


def _blob_sizes(reg: LocalRegistry, digests: tuple[str, ...]) -> list[str]:
    import httpx

    return [httpx.head(f"http://{reg.host}/v2/bench/big/blobs/{d}").headers["content-length"]
            for d in digests]


if __name__ == "__main__":
    sys.exit(main())
