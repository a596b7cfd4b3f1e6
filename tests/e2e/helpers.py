"""e2e helpers: a real pycri daemon with its own root, runroot, socket, CNI conf dir, bridge
and subnet, driven over its unix socket with the generated gRPC stubs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2, api_pb2_grpc
from sandbox import cgroups

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path("/usr/lib/cni")
START_TIMEOUT = 180  # seconds a daemon may take to answer after it is started
# Client connections to the streaming server opened by the running test (see connect()).
_connections: list[socket.socket] = []


def connect(host: str | None, port: int | None, timeout: float, tls: bool = False
            ) -> socket.socket:
    """A TCP connection that the conftest closes when the test ends, passed or failed: a test
    that fails mid-session must not leave a socket for a later test's ResourceWarning. With
    ``tls``, wrapped in TLS without checking the peer (the kubelet's self-signed certificate)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=host)
    _connections.append(sock)
    return sock


def close_connections() -> None:
    while _connections:
        _connections.pop().close()


class UnitProcess:
    """The daemon run as a systemd service from the shipped unit (the node guest's runs): the
    part of Popen the tests use, answered by systemctl."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.returncode: int | None = None

    def _show(self, prop: str) -> str:
        return subprocess.run(["systemctl", "show", "-p", prop, "--value", self.unit],
                              capture_output=True, text=True, check=True).stdout.strip()

    @property
    def pid(self) -> int:
        return int(self._show("MainPID"))

    def poll(self) -> int | None:
        if self._show("ActiveState") in ("active", "activating", "reloading"):
            return None
        self.returncode = int(self._show("ExecMainStatus") or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if sig == signal.SIGTERM:  # how systemd stops it: `systemctl stop`, KillMode and all
            subprocess.run(["systemctl", "stop", "--no-block", self.unit], check=True)
        else:
            subprocess.run(["systemctl", "kill", "--kill-whom=main", f"--signal={int(sig)}",
                            self.unit], check=True)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.unit, timeout)
            time.sleep(0.05)
        return code


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root")
    for tool in ("runc", "conmon", "catatonit"):
        if not shutil.which(tool):
            pytest.skip(f"e2e tests need {tool}")
    if not (PLUGIN_DIR / "bridge").exists():
        pytest.skip("e2e tests need the CNI plugins in /usr/lib/cni")


class Daemon:
    """One pycri process; ``restart(kill=True)`` is kill -9 and start again."""

    def __init__(self, base: Path, tag: str, subnet_octet: int) -> None:
        self.base = base
        self.tag = tag
        self.bridge = f"pcr{tag}"
        self.subnet = f"10.{subnet_octet}.{random.randint(0, 255)}.0/24"
        self.root = base / "root"
        self.runroot = base / "run"
        self.socket = base / "run" / "pycri.sock"
        self.conf_dir = base / "cni"
        self.ipam_dir = base / "ipam"
        self.plugin_dir = base / "plugins"  # test-only plugins, searched before the real ones
        self.plugin_dir.mkdir(parents=True)
        # The node guest runs the node-marked tests once per driver (hack/node/suite.sh).
        self.cgroup_driver = os.environ.get("PYCRI_E2E_CGROUP_DRIVER", "cgroupfs")
        if self.cgroup_driver == "systemd":
            # Underscores, not dashes: a dash would nest the slice under "pycri.slice".
            self.cgroup_parent = f"pycri_e2e_{tag}.slice"
            self.conmon_cgroup = "pod"
        else:
            self.cgroup_parent = f"/pycri-e2e-{tag}"
            self.conmon_cgroup = f"/pycri-e2e-{tag}-conmon"
        # NRI on a socket of this daemon's own (tests connect plugins to it), no plugins
        # pre-installed unless a test puts one in nri_plugins.
        self.nri_socket = base / "run" / "nri.sock"
        self.nri_plugins = base / "nri-plugins"
        self.log = base / "daemon.log"
        self.config_path = base / "pycri.conf"
        self.registries_conf = base / "registries.conf"
        self.proc: subprocess.Popen[bytes] | UnitProcess | None = None
        self.env: dict[str, str] = {}  # added to the daemon's environment (not under a unit)
        # PYCRI_E2E_UNIT: a systemd unit file (contrib/systemd/pycri.service) the daemon runs
        # under, as a node runs it; otherwise it is a child of the test run.
        self.unit_file = os.environ.get("PYCRI_E2E_UNIT", "")
        self.unit = f"pycri-e2e-{tag}.service"
        self.conf_dir.mkdir(parents=True)
        self.write_cni_config()
        self.config_path.write_text(
            "[pycri]\n"
            f'root = "{self.root}"\nrunroot = "{self.runroot}"\nlog_level = "debug"\n'
            "[pycri.api]\n"
            f'listen = "{self.socket}"\n'
            "[pycri.runtime]\n"
            f'cgroup_driver = "{self.cgroup_driver}"\n'
            f'default_cgroup_parent = "{self.cgroup_parent}"\n'
            f'conmon_cgroup = "{self.conmon_cgroup}"\n'
            "[pycri.image]\n"
            f'registries_conf = "{self.registries_conf}"\n'
            "[pycri.network]\n"
            f'conf_dir = "{self.conf_dir}"\nplugin_dirs = ["{self.plugin_dir}", "{PLUGIN_DIR}"]\n'
            f'netns_dir = "/var/run/netns"\n'
            "[pycri.nri]\n"
            f'socket_path = "{self.nri_socket}"\nplugin_path = "{self.nri_plugins}"\n'
            f'plugin_config_path = "{base / "nri-conf"}"\n'
        )

    @classmethod
    def new(cls, kind: str = "e2e", log_level: str = "debug") -> Daemon:
        """A daemon (not started) with a fresh /tmp/pycri-<kind>-<tag> base, bridge and subnet."""
        tag = uuid.uuid4().hex[:6]
        base = Path(f"/tmp/pycri-{kind}-{tag}")
        base.mkdir(mode=0o700)
        d = cls(base, tag, random.randint(200, 250))
        d.config_path.write_text(d.config_path.read_text().replace(
            'log_level = "debug"', f'log_level = "{log_level}"'))
        return d

    def write_cni_config(self) -> None:
        conf = {
            "cniVersion": "1.0.0",
            "name": f"pycri-e2e-{self.tag}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(self.ipam_dir),
                        "ranges": [[{"subnet": self.subnet}]],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            ],
        }
        (self.conf_dir / "10-e2e.conflist").write_text(json.dumps(conf))

    def start_fails(self) -> str:
        """The daemon's log once it refused to start as it must for bad configuration or
        state it cannot use: exit code 2."""
        with pytest.raises(RuntimeError):
            self.start()
        # Under systemd (PYCRI_E2E_UNIT) `systemctl start` failed and left no process handle.
        proc = self.proc or (UnitProcess(self.unit) if self.unit_file else None)
        assert proc is not None and proc.poll() == 2
        return self.log.read_text(errors="replace")

    def start(self) -> None:
        proc = self.proc = self._start_unit() if self.unit_file else self.spawn()
        # A bound, not a figure: under the node guest's software emulation importing grpc
        # alone takes many seconds.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pycri exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                # ListPodSandbox, not Version: it answers only once recovery has finished.
                self.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.05)
        self.stop(kill=True)  # not left running (and reported as a leaked subprocess)
        raise RuntimeError(f"pycri did not become ready in {START_TIMEOUT} s:\n{self.log_tail()}")

    def spawn(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """The daemon process, started with ``env`` added to this one's; not waited for."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cri", "serve", "--config", str(self.config_path)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env, **(env or {})},
            )
        return self.proc

    def _start_unit(self) -> UnitProcess:
        """The shipped unit, with this daemon's command line, log and no automatic restart
        (a test that kills the daemon starts it again itself)."""
        units = Path("/run/systemd/system")
        units.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.unit_file, units / self.unit)
        dropin = units / f"{self.unit}.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "e2e.conf").write_text(
            "[Service]\nExecStart=\n"
            f"ExecStart={sys.executable} -m cri serve --config {self.config_path}\n"
            f"WorkingDirectory={REPO}\n"
            f"StandardOutput=append:{self.log}\nStandardError=append:{self.log}\nRestart=no\n")
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "reset-failed", self.unit], capture_output=True, check=False)
        # Type=notify: this returns once pycri said READY=1, or fails when it exited first.
        started = subprocess.run(["systemctl", "start", self.unit], capture_output=True,
                                 text=True, check=False)
        if started.returncode != 0:
            raise RuntimeError(f"systemctl start {self.unit}: {started.stderr}\n{self.log_tail()}")
        return UnitProcess(self.unit)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def cleanup(self) -> None:
        """Stop the daemon and remove what the session made: bridge, cgroup parent, base dir.

        Pods a failed test left behind are removed first (through the daemon, best effort), so
        a red run does not leave pause processes, netns and mounts on the machine."""
        self.remove_all_pods()
        self.stop()
        if self.unit_file:
            shutil.rmtree(Path("/run/systemd/system") / f"{self.unit}.d", ignore_errors=True)
            (Path("/run/systemd/system") / self.unit).unlink(missing_ok=True)
            subprocess.run(["systemctl", "reset-failed", self.unit], capture_output=True,
                           check=False)
            subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        if self.cgroup_driver == "systemd":
            subprocess.run(["systemctl", "stop", self.cgroup_parent], capture_output=True,
                           check=False)
        else:
            for hier in Path("/sys/fs/cgroup").iterdir():
                for made in (self.cgroup_parent, self.conmon_cgroup):
                    with contextlib.suppress(OSError):
                        (hier / made.lstrip("/")).rmdir()
        shutil.rmtree(self.base, ignore_errors=True)

    def remove_all_pods(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        rt = self.runtime()
        with contextlib.suppress(grpc.RpcError):
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items:
                with contextlib.suppress(grpc.RpcError):
                    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id),
                                      timeout=60)
                    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                        timeout=60)

    def pod_cgroup(self, uid: str) -> str:
        """The cgroup this daemon gives a pod of ``uid`` that comes with no cgroup_parent."""
        if self.cgroup_driver == "systemd":
            return f"{self.cgroup_parent[:-len('.slice')]}-pod{uid.replace('-', '_')}.slice"
        return f"{self.cgroup_parent}/pod{uid}"

    def wait_for_log(self, *texts: str, timeout: float = 30) -> bool:
        """True once any of ``texts`` is in the daemon's log (False at the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log.read_text(errors="replace")
            if any(t in log for t in texts):
                return True
            time.sleep(0.05)
        return False

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix://{self.socket}")

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def image(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel())


def pod_netns() -> set[str]:
    """The pod network namespaces pinned on the node (pycri names them pycri-<pod id prefix>)."""
    pinned = Path("/var/run/netns")
    return {p.name for p in pinned.glob("pycri-*")} if pinned.is_dir() else set()


def session_leftovers(d: Daemon) -> list[str]:
    left = []
    for parent in cgroups.pod_cgroup_dirs(d.cgroup_parent):
        if parent.is_dir() and any(p.is_dir() for p in parent.iterdir()):
            left.append(f"pod cgroups under {parent}")
    if d.conmon_cgroup.startswith("/"):  # with systemd, conmon scopes are in the pod slices
        for monitors in cgroups.pod_cgroup_dirs(d.conmon_cgroup):
            procs = monitors / "cgroup.procs"
            if procs.is_file() and procs.read_text().strip():
                left.append(f"processes in the conmon cgroup {monitors}")
    if str(d.base) in Path("/proc/self/mountinfo").read_text():
        left.append("mounts under the test dir")
    veths = subprocess.run(["ip", "-o", "link", "show", "master", d.bridge],
                           capture_output=True, text=True).stdout
    if veths.strip():
        left.append("veths on the bridge")
    leases = [p for p in d.ipam_dir.rglob("*") if p.is_file() and p.name[0].isdigit()]
    if leases:
        left.append(f"IP leases {leases}")
    pods = list((d.root / "sandboxes").glob("*")) if (d.root / "sandboxes").exists() else []
    if pods:
        left.append(f"pod state {pods}")
    ctrs = list((d.root / "containers").glob("*")) if (d.root / "containers").exists() else []
    if ctrs:
        left.append(f"container state {ctrs}")
    conmons = subprocess.run(["pgrep", "-f", f"conmon.*{d.base}"], capture_output=True,
                             text=True).stdout.split()
    if conmons:
        left.append(f"conmon processes {conmons}")
    return left


def assert_nothing_left(d: Daemon, netns_before: set[str]) -> None:
    """Everything the daemon's pods had is gone, and no pod netns appeared since
    ``netns_before`` (pod_netns() when the daemon started)."""
    left = session_leftovers(d)
    if pod_netns() - netns_before:
        left.append(f"network namespaces {sorted(pod_netns() - netns_before)}")
    assert not left, f"leaked after the e2e session: {left}"


def hugepage_sizes() -> list[str]:
    """The page sizes under /sys/kernel/mm/hugepages, named as the kubelet sends them (2MB,
    1GB) and the kernel names its hugetlb files."""
    sizes = []
    for p in sorted(Path("/sys/kernel/mm/hugepages").glob("hugepages-*kB")):
        kib = int(p.name.removeprefix("hugepages-").removesuffix("kB"))
        sizes.append(f"{kib >> 20}GB" if kib % (1 << 20) == 0 else f"{kib >> 10}MB")
    return sizes


def pod_config(name: str | None = None, **kw: object) -> api_pb2.PodSandboxConfig:
    name = name or f"pod-{uuid.uuid4().hex[:8]}"
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="e2e", uid=uuid.uuid4().hex,
                                            attempt=0),
        hostname=name,
        labels={"app": "e2e"},
    )
    for key, value in kw.items():
        if isinstance(value, dict):
            getattr(cfg, key).clear()
            getattr(cfg, key).update(value)
        else:
            setattr(cfg, key, value)
    return cfg


@contextlib.contextmanager
def swap_file(mib: int = 256) -> Iterator[str]:
    """Swap on for the block: a file under /var/tmp, always switched off and removed. Yields
    swapon's complaint ("" when it worked): some filesystems cannot swap."""
    swapfile = Path(f"/var/tmp/pycri-e2e-swap-{uuid.uuid4().hex[:8]}")
    try:
        # dd, not fallocate: swapon refuses files with unwritten extents on some filesystems.
        subprocess.run(["dd", "if=/dev/zero", f"of={swapfile}", "bs=1M", f"count={mib}"],
                       check=True, capture_output=True)
        swapfile.chmod(0o600)
        subprocess.run(["mkswap", str(swapfile)], check=True, capture_output=True)
        on = subprocess.run(["swapon", str(swapfile)], capture_output=True, text=True)
        try:
            if on.returncode == 0:
                assert str(swapfile) in Path("/proc/swaps").read_text()
            yield on.stderr.strip() if on.returncode else ""
        finally:
            subprocess.run(["swapoff", str(swapfile)], check=False, capture_output=True)
    finally:
        swapfile.unlink(missing_ok=True)

