"""The Runtime: everything the RPC modules share (config, stores, the OCI runtime, CNI), plus
start-up recovery and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cri import __version__
from cri.api import api_pb2
from cri.config import Config, ConfigError, HandlerConfig
from cri.errors import NotFound, Unavailable
from cri.image.images import Images
from cri.metrics.registry import Metrics
from cri.metrics.states import StateCollector
from cri.nri.service import NRI
from cri.runtime.events import EventBus
from cri.runtime.handlers import Handlers
from cri.runtime.network import PodNetwork
from cri.store.container import ContainerStore
from cri.store.sandbox import Sandbox, SandboxState, SandboxStore
from sandbox import diskusage, masquerade
from sandbox.apparmor import AppArmor, AppArmorError, SystemHost
from sandbox.cdi.registry import Registry as CDIRegistry
from sandbox.cgroups import features
from sandbox.cgroups.driver import CgroupDriver, CgroupfsDriver, SystemdDriver
from sandbox.cgroups.stats import CpuRate
from sandbox.cgroups.systemd import DBusSystemd
from sandbox.errors import CgroupError
from sandbox.masquerade import MasqueradeError
from sandbox.oci.exits import ExitWatcher
from sandbox.oci.hook_dirs import HookDirs
from sandbox.oci.runtime import OCIRuntime

if TYPE_CHECKING:
    from cri.streaming.service import Streaming

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def make_driver(config: Config) -> CgroupDriver:
    """The configured cgroup driver; no fallback from one to the other."""
    monitor = config.runtime.monitor_cgroup()
    if config.runtime.cgroup_driver == "systemd":
        return SystemdDriver(DBusSystemd(), monitor)
    return CgroupfsDriver(monitor)


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        root, runroot = Path(config.root), Path(config.runroot)
        self.sandboxes = SandboxStore(root)
        self.containers = ContainerStore(root)
        self.events = EventBus()
        # Every name pycri uses in runroot is in config.RUNROOT_DIRS (handlers' state is there).
        self.run_dir = runroot / "sandboxes"
        self.exits_dir = runroot / "exits"
        # Scratch dirs of runc exec / update calls (process.json, pid files); what a crash left
        # there is cleaned up at start-up.
        self.exec_dir = runroot / "exec"
        self.image_root = root / "images"  # the image store (content and unpacked layers)
        self.container_root = self.containers.dir  # container state and writable layers
        self.cgroups = make_driver(config)

        def make_oci(handler: HandlerConfig) -> OCIRuntime:
            # Exit files and conmon's per-container dirs are shared: container ids are unique
            # across handlers, and the exit watcher reads one directory.
            return OCIRuntime(
                runtime_path=Path(handler.runtime_path),
                conmon_path=Path(handler.monitor_path),
                runtime_root=Path(handler.runtime_root),
                exits_dir=self.exits_dir,
                persist_root=root / "conmon",
                runc_timeout=config.runtime.runtime_timeout,
                place_monitor=self.cgroups.place_monitor,
                systemd_cgroup=self.cgroups.systemd_cgroup,
            )

        self.handlers = Handlers(config, make_oci)
        # OCI hook files, read at each CreateContainer (again only where they changed).
        self.oci_hooks = HookDirs(config.runtime.hooks_dir)
        self.network = PodNetwork(config)
        self.cdi = CDIRegistry(config.cdi.spec_dirs)  # read at the first container asking
        self.apparmor = AppArmor(SystemHost(timeout=config.runtime.runtime_timeout),
                                 config.runtime.apparmor_profile)
        self.images = Images(self.image_root, Path(config.image.registries_conf),
                             pause_image=config.image.pause_image)
        self.images.in_use = self._image_users
        # [pycri.metrics]: counted in any case (it costs next to nothing), served by the
        # server only when enabled. Pods and containers by state are read from the stores at
        # each scrape.
        self.metrics = Metrics()
        self.metrics.registry.register(StateCollector(
            lambda: (p.status.state.value for p in self.sandboxes),
            lambda: (c.status.state.value for c in self.containers)))
        self.images.on_pulled = self.metrics.image_pulled
        self.exits = ExitWatcher(self.exits_dir, self._on_exit)
        # NRI plugins (started by the server once recovery is done, see cri/runtime/nri_host),
        # and each exited container's StopContainer event while plugins take it.
        self.nri = NRI(config.nri, "pycri", __version__)
        self.nri_stops: dict[str, asyncio.Task[None]] = {}
        # Operations on one pod are serialised; different pods proceed in parallel.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Waiters for an infra process's exit (StopPodSandbox waits for SIGKILL to land).
        self._exit_waiters: dict[str, asyncio.Future[int]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # The previous CPU sample of each cgroup, for usage_nano_cores, and writable-layer
        # sizes, re-walked as often as their cost allows; both pruned by prune_stats().
        self.cpu_rates: dict[str, CpuRate] = {}
        self.layer_usage = diskusage.UsageCache()
        # Each running container's pod OOM-kill count when it started (container_exit).
        self.oom_baselines: dict[str, int] = {}
        # The whole containers dir, for ImageFsInfo (its one key is never pruned).
        self.container_fs_usage = diskusage.UsageCache()
        self._streaming: Any = None  # cri.streaming.service.Streaming, once started
        # What container cgroups can get on this host, learnt at start-up.
        self._cgroup_features: features.Features | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` detached from any RPC, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def oci(self, handler: str) -> OCIRuntime:
        """The OCI runtime of the handler a pod or container recorded (its meta.handler)."""
        return self.handlers.of(handler).oci

    def lock(self, ident: str) -> asyncio.Lock:
        return self._locks[ident]

    @contextlib.asynccontextmanager
    async def locked_pod(self, prefix: str) -> AsyncIterator[Sandbox | None]:
        """The pod ``prefix`` names, held under its lock; None when there is no such pod (or
        it was removed while we waited), which Stop and Remove treat as success."""
        try:
            pod = self.sandboxes.lookup(prefix)
        except NotFound:
            yield None
            return
        async with self.lock(pod.id):
            yield pod if self.sandboxes.get(pod.id) is pod else None

    def forget_lock(self, ident: str) -> None:
        self._locks.pop(ident, None)

    async def stats_worker(self, collect: Callable[[], _T]) -> _T:
        """``collect()`` (stats or metrics of containers and pods) in a worker thread, with the
        caches pruned once it returns, whatever it removed meanwhile (see prune_stats)."""
        try:
            return await asyncio.to_thread(collect)
        finally:
            self.prune_stats()

    def prune_stats(self) -> None:
        """Drop the CPU samples and layer sizes of containers and pods that are gone. Called
        on the event loop after a removal and after every stats worker has returned: a worker
        still measuring a container that was removed meanwhile puts its entry back, and a new
        sandbox of the same pod may share the old one's cgroup (its sample stays)."""
        live = {c.meta.cgroup_path for c in self.containers}
        live.update(p.meta.cgroup_parent for p in self.sandboxes)
        for path in list(self.cpu_rates):  # workers may add entries meanwhile
            if path not in live:
                self.cpu_rates.pop(path, None)
        self.layer_usage.retain({c.id for c in self.containers})

    # Exits ------------------------------------------------------------------------------
    def _on_exit(self, ctr_id: str, code: int, exited_at: datetime) -> None:
        waiter = self._exit_waiters.pop(ctr_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(code)
        from cri.runtime import container_exit

        pod = self.sandboxes.get(ctr_id)
        if pod is not None and pod.status.infra_exit_code is None:
            log.info("infra of pod sandbox %s exited with %d", ctr_id, code)
            pod.status.infra_exit_code = code
            pod.set_state(SandboxState.NOTREADY)
            self.sandboxes.save(pod)
            # Died or stopped, the pod is not ready: the kubelet makes a new one if it must.
            container_exit.publish_pod(self, pod.id,
                                       api_pb2.ContainerEventType.CONTAINER_STOPPED_EVENT)
            return
        ctr = self.containers.get(ctr_id)
        if ctr is not None:
            container_exit.container_exited(self, ctr, code, exited_at)

    def _image_users(self, image_id: str) -> list[str]:
        return [c.meta.name for c in self.containers if c.meta.image_id == image_id
                or image_id in c.meta.image_mounts.values()]

    def exit_waiter(self, ctr_id: str) -> asyncio.Future[int]:
        """A future resolved when conmon reports ``ctr_id``'s exit (register before killing)."""
        fut = self._exit_waiters.get(ctr_id)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._exit_waiters[ctr_id] = fut
        known = self.exits.read_exit(ctr_id)
        if known is not None and not fut.done():
            fut.set_result(known[0])
        return fut

    def drop_exit_waiter(self, ctr_id: str) -> None:
        fut = self._exit_waiters.pop(ctr_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    # Lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover state written by an earlier daemon (kill -9 included)."""
        from cri.runtime.recovery import recover

        try:
            await self.cgroups.start()
        except CgroupError as exc:
            key = "cgroup_driver" if self.cgroups.systemd_cgroup else "conmon_cgroup"
            raise ConfigError(f"pycri.runtime.{key}: {exc}") from exc
        try:
            self._cgroup_features = await asyncio.to_thread(features.detect)
        except CgroupError as exc:
            raise ConfigError(f"pycri.runtime.cgroup_driver: {exc}") from exc
        missing = self._cgroup_features.missing()
        if missing:  # once, as CRI-O does; runc would fail every create that carried them
            log.info("not available to container cgroups on this host: %s; limits that need "
                     "them are left out of OCI specs, unified keys for them are refused",
                     ", ".join(missing))
        try:  # also deletes the rules of subnets this daemon no longer has
            await asyncio.to_thread(masquerade.ensure, self.config.network.masquerade_cidrs,
                                    self.config.root)
        except MasqueradeError as exc:
            raise ConfigError(f"pycri.network.masquerade_cidrs: {exc}") from exc
        try:  # loads pycri's default profile when the kernel lacks it or has an older text
            await asyncio.to_thread(self.apparmor.start)
        except AppArmorError as exc:
            raise ConfigError(f"pycri.runtime.apparmor_profile: {exc} (\"unconfined\" runs "
                              "containers without a default profile)") from exc
        for d in (self.run_dir, self.exits_dir, self.image_root, self.container_root):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self.handlers.learn_features()
        await asyncio.to_thread(self.images.load)
        self.images.watch()
        from cri.streaming.service import Streaming

        streaming = Streaming(self, self.config)
        await streaming.start()
        self._streaming = streaming
        await recover(self)

    def container_features(self, pod_cgroup: str) -> features.Features:
        """What the cgroups of pod cgroup ``pod_cgroup``'s containers can get."""
        if self._cgroup_features is None:
            raise Unavailable("the runtime has not started yet")
        return features.for_pod(self._cgroup_features, pod_cgroup)

    def streaming(self) -> Streaming:
        if self._streaming is None:
            raise Unavailable("the streaming server is not running yet")
        streaming: Streaming = self._streaming
        return streaming

    async def close(self) -> None:
        await self.nri.close()
        if self._streaming is not None:
            await self._streaming.close()
        self.exits.close()
        await self.images.close()

    def pods(self) -> list[Sandbox]:
        return list(self.sandboxes)
