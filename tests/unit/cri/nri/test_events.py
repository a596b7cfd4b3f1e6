"""The NRI events of the CRI calls (cri/runtime/nri_events.py) with plugins over the real socket
and a runtime of pods and containers in memory (the module's Runtime seam)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api import api_pb2
from cri.config import NRIConfig
from cri.errors import CRIError
from cri.nri import views
from cri.nri.api import api_pb2 as nri
from cri.nri.service import NRI
from cri.nri.ttrpc_status import TtrpcError
from cri.runtime import nri_events
from cri.store.container import ContainerMeta, ContainerState, ContainerStore
from cri.store.sandbox import Sandbox, SandboxMeta, SandboxState, SandboxStatus, SandboxStore
from sandbox.cgroups.driver import CgroupDriver, CgroupfsDriver
from sandbox.cgroups.features import Features
from tests.fixtures.nri_plugin import StubPlugin
from tests.unit.cri.nri.aio import run
from tests.unit.cri.nri.test_service import FakeHost, connect, joined

SPEC: dict[str, Any] = {"process": {"args": ["sleep", "1"], "env": ["PATH=/bin"]},
                        "mounts": [], "annotations": {}, "linux": {"resources": {}}}


class FakeRuntime:
    def __init__(self, root: Path, nri_service: NRI) -> None:
        self.nri = nri_service
        self.nri_stops: dict[str, asyncio.Task[None]] = {}
        self.cgroups: CgroupDriver = CgroupfsDriver("")
        self.sandboxes = SandboxStore(root)
        self.containers = ContainerStore(root)
        self.features = Features(v2=False, controllers=frozenset({"cpu", "memory"}),
                                 files=frozenset())

    def container_features(self, pod_cgroup: str) -> Features:
        return self.features

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.ensure_future(coro)


def a_pod() -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(
        name="web", namespace="shop", uid="u-1"), labels={"app": "web"})
    meta = SandboxMeta(id="p" * 64, name="k8s_POD_web", runtime_handler="", created_at=1,
                       run_dir="/run/x", netns_path="/var/run/netns/x", cgroup_parent="/pods/p1",
                       cgroup_created=True, hostname="web", shm_path="/run/x/shm",
                       infra_id="p" * 64)
    return Sandbox(meta, cfg, SandboxStatus(SandboxState.READY, pid=42, ips=["10.0.0.2"]))


def info(ctr_id: str = "c" * 64) -> views.ContainerInfo:
    return views.ContainerInfo(id=ctr_id, pod_id="p" * 64, name="app",
                               state=nri.CONTAINER_UNKNOWN, labels={"tier": "1"})


@asynccontextmanager
async def runtime(tmp_path: Path) -> AsyncIterator[FakeRuntime]:
    cfg = NRIConfig(socket_path=str(tmp_path / "nri.sock"), plugin_path=str(tmp_path / "none"),
                    plugin_config_path=str(tmp_path / "none"))
    service = NRI(cfg, "pycri", "0.1.0")
    await service.start(FakeHost())
    try:
        yield FakeRuntime(tmp_path / "root", service)
    finally:
        await service.close()


def test_plugins_adjust_a_new_container_in_turn(tmp_path: Path) -> None:
    async def add_env(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(
            env=[nri.KeyValue(key="FIRST", value="1")]))

    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            cfg = rt.nri.config
            first = await connect(cfg, StubPlugin("first", "10", [nri.CREATE_CONTAINER],
                                                  {"CreateContainer": add_env}))
            second = await connect(cfg, StubPlugin("second", "20", [nri.CREATE_CONTAINER]))
            await joined(rt.nri, 2)
            spec = copy.deepcopy(SPEC)
            pod = a_pod()
            await nri_events.create_container(rt, pod, info(), spec)
            assert "FIRST=1" in spec["process"]["env"]
            [seen] = second.got("CreateContainer")
            assert "FIRST=1" in seen.container.env  # the second plugin sees the first's change
            [shown] = first.got("CreateContainer")
            assert (shown.pod.name, shown.pod.namespace, shown.pod.uid, shown.pod.pid,
                    list(shown.pod.ips)) == ("web", "shop", "u-1", 42, ["10.0.0.2"])
            assert shown.pod.linux.cgroup_parent == "/pods/p1"
            assert (shown.container.name, dict(shown.container.labels)) == ("app", {"tier": "1"})

    run(scenario)


def test_two_plugins_setting_the_same_env_fail_the_create_naming_both(tmp_path: Path) -> None:
    def setting(value: str) -> Any:
        async def handler(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
            return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(
                env=[nri.KeyValue(key="MODE", value=value)]))
        return handler

    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            plugins = [await connect(rt.nri.config, StubPlugin(
                name, idx, [nri.CREATE_CONTAINER], {"CreateContainer": setting(name)}))
                for name, idx in (("a", "10"), ("b", "20"))]
            await joined(rt.nri, 2)
            with pytest.raises(CRIError, match="NRI plugins 10-a and 20-b both tried to set "
                                               "env 'MODE'") as err:
                await nri_events.create_container(rt, a_pod(), info(), copy.deepcopy(SPEC))
            assert err.value.code is grpc.StatusCode.UNKNOWN
            assert all(p.got("CreateContainer") for p in plugins)

    run(scenario)


def test_a_validator_sees_who_adjusted_what_and_may_reject_it(tmp_path: Path) -> None:
    async def adjust_it(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        adj = nri.ContainerAdjustment(env=[nri.KeyValue(key="X", value="1")])
        adj.hooks.prestart.add(path="/bin/hook")
        return nri.CreateContainerResponse(adjust=adj)

    async def no_hooks(req: nri.ValidateContainerAdjustmentRequest
                       ) -> nri.ValidateContainerAdjustmentResponse:
        owners = req.owners.owners[req.container.id]
        if owners.simple[nri.OciHooks]:
            return nri.ValidateContainerAdjustmentResponse(
                reject=True, reason=f"hooks from {owners.simple[nri.OciHooks]}")
        return nri.ValidateContainerAdjustmentResponse()

    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            cfg = rt.nri.config
            adjuster = await connect(cfg, StubPlugin("a", "10", [nri.CREATE_CONTAINER],
                                                     {"CreateContainer": adjust_it}))
            validator = await connect(cfg, StubPlugin(
                "v", "90", [nri.VALIDATE_CONTAINER_ADJUSTMENT],
                {"ValidateContainerAdjustment": no_hooks}))
            await joined(rt.nri, 2)
            with pytest.raises(CRIError, match="NRI validator 90-v rejected the adjustments "
                                               "of container 'app': hooks from 10-a"):
                await nri_events.create_container(rt, a_pod(), info(), copy.deepcopy(SPEC))
            [req] = validator.got("ValidateContainerAdjustment")
            assert req.container.env == ["PATH=/bin"]  # as it was before any plugin
            assert [e.key for e in req.adjust.env] == ["X"]
            env = req.owners.owners[req.container.id].compound[nri.Env]
            assert dict(env.owners) == {"X": "10-a"}
            assert [(p.index, p.name) for p in req.plugins] == [("10", "a"), ("90", "v")]
            assert adjuster.got("CreateContainer")

    run(scenario)


def test_a_refused_pod_is_an_error_and_its_undo_tells_plugins(tmp_path: Path) -> None:
    async def refuse(req: Any) -> None:
        raise TtrpcError(grpc.StatusCode.UNKNOWN, "not today")

    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            stub = await connect(rt.nri.config, StubPlugin("gate", "10", handlers={
                "RunPodSandbox": refuse}))
            await joined(rt.nri, 1)
            pod = a_pod()
            with pytest.raises(CRIError, match="10-gate failed RunPodSandbox: not today"):
                await nri_events.run_pod_sandbox(rt, pod)
            await nri_events.undo_run_pod_sandbox(rt, pod)
            assert [m for m, _ in stub.received][-3:] == ["RunPodSandbox", "StopPodSandbox",
                                                          "RemovePodSandbox"]

    run(scenario)


def test_stop_container_is_sent_once_and_awaited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            stub = await connect(rt.nri.config, StubPlugin("watch", "10", [nri.STOP_CONTAINER]))
            await joined(rt.nri, 1)
            pod = a_pod()
            rt.sandboxes._pods[pod.id] = pod  # committed, as far as lookups go
            meta = ContainerMeta(id="c" * 64, name="k8s_app", pod_id=pod.id, created_at=1,
                                 image="busybox", image_id="sha256:1", image_ref="busybox",
                                 chain_ids=[], log_path="", cgroup_path="/pods/p1/c",
                                 stop_signal=15, uid=0, gid=0, additional_gids=[], username="",
                                 pid_namespace="container")
            ctr = rt.containers.new(meta, api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="app")))
            ctr.bundle.mkdir(parents=True)
            (ctr.bundle / "config.json").write_text(json.dumps(SPEC))
            ctr.status.state = ContainerState.EXITED
            nri_events.container_exited(rt, ctr)
            nri_events.container_exited(rt, ctr)  # its stop path noticing the same exit
            await nri_events.stop_sent(rt, ctr)
            [stopped] = stub.got("StopContainer")
            assert (stopped.container.name, stopped.container.state,
                    list(stopped.container.args)) == ("app", nri.CONTAINER_STOPPED,
                                                      ["sleep", "1"])

    run(scenario)


def test_with_no_plugin_nothing_is_built(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with runtime(tmp_path) as rt:
            spec = copy.deepcopy(SPEC)
            updates = await nri_events.create_container(rt, a_pod(), info(), spec)
            assert spec == SPEC and not updates.updates
            await nri_events.run_pod_sandbox(rt, a_pod())
            assert rt.nri_stops == {}

    run(scenario)
