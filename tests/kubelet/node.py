"""A real kubelet in standalone mode (no API server: static pods from a directory) driving a real
pycri daemon: its KubeletConfiguration, its process, and what it shows over its own HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client import ApiClient, V1Pod

from tests.e2e.helpers import Daemon
from tests.fixtures.registry import free_port

K8S_VERSION = "v1.36.3"
DEFAULT_KUBELET = Path(f"/var/cache/pycri/k8s/kubernetes-{K8S_VERSION}/kubelet")
NODE = "pycri-kubelet"  # --hostname-override: static pods are named <name>-<node>
NAMESPACE = "kubelet-e2e"
START_TIMEOUT = 120  # seconds the kubelet may take to serve its API after it is started
CGROUP_FS = Path("/sys/fs/cgroup")
DEVICE_PLUGIN_PATHS = (Path("/var/lib/kubelet/device-plugins/kubelet.sock"),
                       Path("/var/lib/kubelet/device-plugins"), Path("/var/lib/kubelet"))
# What the kubelet sets on the host at start-up when protectKernelDefaults is off (the only other
# choice is to refuse to start on a host that differs): restored when the session ends.
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")

_api = ApiClient()


def kubelet_binary() -> Path:
    """PYCRI_KUBELET, else the cache of hack/k8s/build.sh; the suite skips when neither exists."""
    path = Path(os.environ.get("PYCRI_KUBELET") or DEFAULT_KUBELET)
    if not path.is_file():
        pytest.skip(f"no kubelet at {path}: build it with `sh hack/k8s/build.sh kubelet` "
                    "or point PYCRI_KUBELET at one")
    return path


def to_dict(obj: object) -> Any:
    """A Kubernetes object model as the plain structure its YAML/JSON has."""
    return _api.sanitize_for_serialization(obj)


def base_config(daemon: Daemon, base: Path, cgroup_root: str) -> dict[str, Any]:
    """The KubeletConfiguration every test starts from: standalone, cgroupfs on this v1 host,
    everything it writes under ``base``, its own ports and cgroup root, nothing that evicts."""
    endpoint = f"unix://{daemon.socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Loopback only, ports of its own (another kubelet may hold the well-known ones).
        "address": "127.0.0.1",
        "port": free_port(),
        "readOnlyPort": free_port(),
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        # No API server to ask: anyone on loopback may read pods, logs and exec.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        # This host has cgroup v1 only (plus a v2 mount holding hugetlb); the kubelet refuses
        # v1 unless told: "kubelet is configured to not run on a host using cgroup v1".
        "failCgroupV1": False,
        # The e2e swap tests add a swap file for a while; with swap on the kubelet refuses to
        # start ("running with swap on is not supported").
        "failSwapOn": False,
        "cgroupsPerQOS": True,
        "cgroupRoot": cgroup_root,
        "staticPodPath": str(base / "manifests"),
        "podLogsDir": str(base / "pod-logs"),
        "fileCheckFrequency": "1s",
        "syncFrequency": "10s",
        # The KUBE-FIREWALL / KUBE-IPTABLES-HINT chains serve kube-proxy and other components,
        # none of which run here; they are host-wide and another kubelet may own them.
        "makeIPTablesUtilChains": False,
        # The small test disks of CI machines must never look full: thresholds far below use,
        # and image GC off (high 100 and no maximum age) unless a test turns it on.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%",
                         "imagefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Restarts in seconds rather than minutes (KubeletCrashLoopBackOffMax, beta in 1.36): the
        # back-off is still there (CrashLoopBackOff), only its ceiling is lower.
        "crashLoopBackOff": {"maxContainerRestartPeriod": "4s"},
        # Rotation by the kubelet (rename + ReopenContainerLog), checked every 3 s (the minimum);
        # the size has no minimum, and 64 KiB fills in seconds.
        "containerLogMaxSize": "64Ki",
        "containerLogMaxFiles": 3,
        "containerLogMonitorInterval": "3s",
        # cAdvisor cannot map pycri's cgroups to containers on its own: pod and container stats
        # (and the pods' network) come from the CRI's stats calls.
        "featureGates": {"PodAndContainerStatsFromCRI": True},
    }


class Kubelet:
    """One kubelet process. ``start(**overrides)`` merges keys into the base configuration
    (``featureGates`` merges key by key); ``ensure(**overrides)`` restarts only on a change."""

    def __init__(self, daemon: Daemon, base: Path) -> None:
        self.daemon = daemon
        self.base = base
        self.binary = kubelet_binary()
        self.tag = uuid.uuid4().hex[:6]
        self.cgroup_root = f"/pycri-kubelet-{self.tag}"
        self.root_dir = base / "root"
        self.manifests = base / "manifests"
        self.pod_logs = base / "pod-logs"
        self.log = base / "kubelet.log"
        self.config_path = base / "kubelet.yaml"
        self.base_config = base_config(daemon, base, self.cgroup_root)
        self.overrides: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(verify=False, timeout=30)  # its own self-signed certificate
        for d in (self.root_dir, self.manifests, self.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        self.tunables = {k: (Path("/proc/sys") / k).read_text() for k in KERNEL_TUNABLES}
        # The device manager's socket path is fixed in the kubelet, outside --root-dir: what of
        # it was not there before is removed at the end.
        self.host_paths_before = {p for p in DEVICE_PLUGIN_PATHS if p.exists()}

    # --- configuration and process ---------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        cfg = {**self.base_config, **self.overrides}
        cfg["featureGates"] = {**self.base_config["featureGates"],
                               **self.overrides.get("featureGates", {})}
        return cfg

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.config['port']}"

    @property
    def read_only_api(self) -> str:
        return f"http://127.0.0.1:{self.config['readOnlyPort']}"

    def ensure(self, **overrides: Any) -> None:
        if self.proc is None or self.proc.poll() is not None or overrides != self.overrides:
            self.stop()
            self.start(**overrides)

    def start(self, **overrides: Any) -> None:
        self.overrides = overrides
        self._make_cgroup_root()
        self.config_path.write_text(yaml.safe_dump(self.config))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), f"--config={self.config_path}", f"--root-dir={self.root_dir}",
                 # Its self-signed serving certificate: the default is /var/lib/kubelet/pki,
                 # outside --root-dir, where another kubelet (kubeadm's) keeps its own.
                 f"--cert-dir={self.base / 'pki'}",
                 f"--hostname-override={NODE}",
                 # PYCRI_KUBELET_VERBOSITY=5 shows the kubelet's reasoning (image GC, PLEG...).
                 f"--v={os.environ.get('PYCRI_KUBELET_VERBOSITY', '2')}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        healthz = f"http://127.0.0.1:{self.config['healthzPort']}/healthz"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the kubelet exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (self.http.get(healthz, timeout=2).status_code == 200
                        and self.http.get(f"{self.api}/pods", timeout=5).status_code == 200):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the kubelet did not serve in {START_TIMEOUT} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: the kubelet exits and leaves every pod running, as on a node upgrade."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def _make_cgroup_root(self) -> None:
        # The kubelet refuses a cgroupRoot that does not exist in every hierarchy it uses.
        for hier in v1_hierarchies():
            (hier / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)

    def unmount_root(self) -> None:
        """The kubelet bind-mounts its root dir onto itself (to make it a shared mount for
        mount propagation) and leaves that mount when it exits."""
        while str(self.root_dir) in {line.split()[4] for line in
                                     Path("/proc/self/mountinfo").read_text().splitlines()}:
            subprocess.run(["umount", str(self.root_dir)], check=True)

    def cleanup(self) -> None:
        """After the kubelet stopped and pycri removed the pods: its root dir mount, its
        cgroups (the empty kubepods trees it never removes; on this hybrid host also one on
        the v2 mount, for hugetlb), the host tunables it changed, its HTTP client."""
        self.stop()
        self.unmount_root()
        for hier in all_hierarchies():
            root = hier / self.cgroup_root.lstrip("/")
            if root.is_dir():
                for d in sorted((p for p in root.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    root.rmdir()
        for path in DEVICE_PLUGIN_PATHS:  # the socket first, then its dirs if left empty
            if path in self.host_paths_before:
                continue
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        for key, value in self.tunables.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value)
        self.http.close()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    # --- static pods -----------------------------------------------------------------------

    def add(self, pod: V1Pod) -> None:
        """Write the pod's manifest into the static pod dir (renamed into place: the kubelet
        skips dot-files, so it never reads half a file)."""
        name = pod.metadata.name
        tmp = self.manifests / f".{name}.yaml"
        tmp.write_text(yaml.safe_dump(to_dict(pod)))
        tmp.rename(self.manifests / f"{name}.yaml")

    def remove(self, name: str) -> None:
        (self.manifests / f"{name}.yaml").unlink(missing_ok=True)

    def manifest_names(self) -> list[str]:
        return sorted(p.stem for p in self.manifests.glob("*.yaml"))

    # --- the kubelet's API -----------------------------------------------------------------

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.http.get(f"{self.api}{path}", params=params)  # type: ignore[arg-type]

    def pods(self) -> list[V1Pod]:
        """The pods with the status the kubelet computed (static pods carry it in /pods)."""
        r = self.get("/pods")
        r.raise_for_status()
        # A PodList with no pods has "items": null, which the client's model refuses.
        return [V1Pod.from_dict(item) for item in r.json()["items"] or []]

    def pod(self, name: str) -> V1Pod | None:
        full = f"{name}-{NODE}"
        return next((p for p in self.pods() if p.metadata.name == full), None)

    def summary(self) -> dict[str, Any]:
        r = self.http.get(f"{self.read_only_api}/stats/summary")
        r.raise_for_status()
        data: dict[str, Any] = json.loads(r.text)
        return data

    def run(self, pod: str, container: str, cmd: str, check: bool = True) -> str:
        """The kubelet's plain /run endpoint (ExecSync); it splits ``cmd`` on spaces. A command
        that fails answers 500 with its exit code and output (``check`` refuses that)."""
        r = self.http.post(f"{self.api}/run/{NAMESPACE}/{pod}-{NODE}/{container}",
                           params={"cmd": cmd})
        assert r.status_code == 200 or not check, f"/run {cmd!r}: {r.status_code} {r.text}"
        return r.text

    def container_logs(self, pod: str, container: str, **params: object) -> str:
        r = self.get(f"/containerLogs/{NAMESPACE}/{pod}-{NODE}/{container}", **params)
        r.raise_for_status()
        return r.text


def v1_hierarchies() -> Iterator[Path]:
    """The cgroup v1 hierarchies of this host (named mounts under /sys/fs/cgroup, not the v2
    'unified' one and not the symlinks such as cpu -> cpu,cpuacct)."""
    for hier in CGROUP_FS.iterdir():
        if hier.is_dir() and not hier.is_symlink() and hier.name != "unified" \
                and (hier / "cgroup.procs").exists():
            yield hier


def all_hierarchies() -> Iterator[Path]:
    """The v1 hierarchies and the v2 mount (the kubelet makes its pod cgroups there too)."""
    yield from v1_hierarchies()
    if (CGROUP_FS / "unified" / "cgroup.procs").exists():
        yield CGROUP_FS / "unified"
