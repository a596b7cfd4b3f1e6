"""NRI's runtime side with plugins over the real transport: external plugins on a unix socket,
a pre-installed one started from plugin_path, a fake Host standing in for the runtime."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.config import NRIConfig
from cri.nri import plugin as plugin_mod
from cri.nri.api import api_pb2 as nri
from cri.nri.plugin import PluginError
from cri.nri.service import NRI
from cri.nri.ttrpc_status import TtrpcError
from tests.fixtures.nri_plugin import StubPlugin
from tests.unit.cri.nri.aio import run

REPO = Path(__file__).resolve().parents[4]


class FakeHost:
    def __init__(self) -> None:
        self.pods = [nri.PodSandbox(id="pod1", name="web", namespace="default", uid="u1")]
        self.containers = [nri.Container(id="ctr1", pod_sandbox_id="pod1", name="app")]
        self.applied: list[tuple[list[nri.ContainerUpdate], list[nri.ContainerEviction]]] = []

    async def snapshot(self) -> tuple[list[nri.PodSandbox], list[nri.Container]]:
        return list(self.pods), list(self.containers)

    async def apply_updates(self, updates: Sequence[nri.ContainerUpdate],
                            evictions: Sequence[nri.ContainerEviction]
                            ) -> list[nri.ContainerUpdate]:
        self.applied.append((list(updates), list(evictions)))
        return [u for u in updates if u.container_id == "missing"]



def config(tmp_path: Path, **kw: Any) -> NRIConfig:
    paths = {"socket_path": str(tmp_path / "nri" / "nri.sock"),
             "plugin_path": str(tmp_path / "plugins"),
             "plugin_config_path": str(tmp_path / "conf.d")}
    return NRIConfig(**{**paths, **kw})


@asynccontextmanager
async def running(cfg: NRIConfig, host: FakeHost | None = None) -> AsyncIterator[NRI]:
    service = NRI(cfg, "pycri", "0.1.0")
    await service.start(host or FakeHost())
    try:
        yield service
    finally:
        await service.close()


async def connect(cfg: NRIConfig, plugin: StubPlugin, *, wait: bool = True) -> StubPlugin:
    reader, writer = await asyncio.open_unix_connection(cfg.socket_path)
    await plugin.run(reader, writer)
    if wait:
        assert plugin.synced is not None
        await plugin.synced.wait()
    return plugin


async def joined(service: NRI, count: int) -> None:
    """Wait until ``count`` plugins get events (a plugin is synced just before it joins)."""
    while len(service.plugins) < count:  # noqa: ASYNC110 - the runtime side has no event
        await asyncio.sleep(0.01)


def test_plugins_are_configured_synchronized_and_called_in_index_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as service:
            order: list[str] = []
            late = StubPlugin("late", "10", [nri.RUN_POD_SANDBOX])
            early = StubPlugin("early", "05", [nri.RUN_POD_SANDBOX, nri.STOP_POD_SANDBOX])
            for p in (late, early):
                p.on_receive = lambda method, req, p=p: order.append(f"{p.idx} {method}")
                await connect(cfg, p)
            await joined(service, 2)
            assert oct(Path(cfg.socket_path).stat().st_mode & 0o777) == "0o600"  # noqa: ASYNC240
            configure = late.got("Configure")[0]
            assert (configure.runtime_name, configure.runtime_version, configure.NRI_version,
                    configure.registration_timeout, configure.request_timeout) == (
                "pycri", "0.1.0", "v0.12.2", 5000, 2000)
            sync = early.got("Synchronize")[0]
            assert [p.id for p in sync.pods] == ["pod1"]
            assert [c.id for c in sync.containers] == ["ctr1"]
            order.clear()
            pod = nri.PodSandbox(id="pod2", name="db")
            await service.relay(nri.RUN_POD_SANDBOX, nri.RunPodSandboxRequest(pod=pod))
            await service.relay(nri.STOP_POD_SANDBOX, nri.StopPodSandboxRequest(pod=pod))
            # Each plugin gets only what it subscribed to; lower indexes first.
            assert order == ["05 RunPodSandbox", "10 RunPodSandbox", "05 StopPodSandbox"]
            assert service.subscribed(nri.STOP_POD_SANDBOX)
            assert not service.subscribed(nri.CREATE_CONTAINER)
        # The daemon stops: plugins are told, and the socket goes.
        assert late.got("Shutdown") and early.got("Shutdown")
        assert not Path(cfg.socket_path).exists()  # noqa: ASYNC240

    run(scenario)


def test_a_plugin_that_subscribes_to_nothing_gets_every_event(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as service:
            stub = await connect(cfg, StubPlugin("all", "00"))  # kept: its tasks live with it
            await joined(service, 1)
            for event in (nri.RUN_POD_SANDBOX, nri.CREATE_CONTAINER, nri.REMOVE_CONTAINER):
                assert service.subscribed(event)
            assert stub.got("Configure")

    run(scenario)


def test_a_refusal_fails_the_call_and_names_the_plugin(tmp_path: Path) -> None:
    async def refuse(req: Any) -> None:
        raise TtrpcError(grpc.StatusCode.UNKNOWN, "no room for this pod")

    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as service:
            stub = await connect(cfg, StubPlugin("picky", "30", [nri.RUN_POD_SANDBOX],
                                                 {"RunPodSandbox": refuse}))
            await joined(service, 1)
            with pytest.raises(PluginError, match="30-picky failed RunPodSandbox: no room"):
                await service.relay(nri.RUN_POD_SANDBOX, nri.RunPodSandboxRequest())
            assert stub.got("RunPodSandbox")
            assert len(service.plugins) == 1  # refusing is an answer: it stays

    run(scenario)


def test_a_hung_plugin_is_cut_off_and_the_call_goes_on(tmp_path: Path) -> None:
    async def hang(req: Any) -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        cfg = config(tmp_path, plugin_request_timeout=0.2)
        async with running(cfg) as service:
            hung = await connect(cfg, StubPlugin("hung", "10", [nri.CREATE_CONTAINER],
                                                 {"CreateContainer": hang}))
            fine = await connect(cfg, StubPlugin("fine", "20", [nri.CREATE_CONTAINER]))
            await joined(service, 2)
            replies = await service.relay(nri.CREATE_CONTAINER, nri.CreateContainerRequest())
            assert [p.full_name for p, _ in replies] == ["20-fine"]
            await hung.wait_closed()  # the runtime dropped its connection
            await asyncio.sleep(0)
            assert [p.full_name for p in service.plugins] == ["20-fine"]
            assert fine.got("CreateContainer")

    run(scenario)


def test_a_plugin_that_goes_away_is_forgotten(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as service:
            gone = await connect(cfg, StubPlugin("gone", "10"))
            await joined(service, 1)
            gone.close()
            await gone.wait_closed()
            while service.plugins:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert await service.relay(nri.RUN_POD_SANDBOX, nri.RunPodSandboxRequest()) == []

    run(scenario)


@pytest.mark.parametrize("name,idx", [("bad name", "10"), ("ok", "1"), ("", "10")])
def test_registration_with_a_bad_name_or_index_is_refused(tmp_path: Path, name: str,
                                                          idx: str) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as service:
            with pytest.raises(TtrpcError) as err:
                await connect(cfg, StubPlugin(name, idx), wait=False)
            assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert service.plugins == []

    run(scenario)


def test_a_plugin_that_never_registers_is_dropped(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = config(tmp_path, plugin_registration_timeout=0.2)
        async with running(cfg) as service:
            silent = StubPlugin("silent", "10")
            reader, writer = await asyncio.open_unix_connection(cfg.socket_path)
            await silent.run(reader, writer, register=False)
            await silent.wait_closed()  # the runtime hung up
            assert service.plugins == []

    run(scenario)


def test_a_big_snapshot_is_sent_in_several_messages(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_mod, "SYNC_BUDGET", 200)
    host = FakeHost()
    host.pods = [nri.PodSandbox(id=f"pod{i}", name="x" * 40) for i in range(5)]
    host.containers = [nri.Container(id=f"ctr{i}", name="y" * 40) for i in range(5)]

    async def scenario() -> None:
        cfg = config(tmp_path)
        async with running(cfg, host):
            stub = await connect(cfg, StubPlugin("sync", "10"))
            syncs = stub.got("Synchronize")
            assert len(syncs) > 2
            assert [s.more for s in syncs] == [True] * (len(syncs) - 1) + [False]
            assert [p.id for s in syncs for p in s.pods] == [f"pod{i}" for i in range(5)]
            assert [c.id for s in syncs for c in s.containers] == [f"ctr{i}" for i in range(5)]

    run(scenario)


def test_updates_a_plugin_asks_for_reach_the_runtime(tmp_path: Path) -> None:
    async def scenario() -> None:
        host = FakeHost()
        cfg = config(tmp_path)
        async with running(cfg, host) as service:
            stub = await connect(cfg, StubPlugin("tuner", "10"))
            await joined(service, 1)
            update = nri.ContainerUpdate(container_id="ctr1")
            update.linux.resources.cpu.shares.value = 512
            missing = nri.ContainerUpdate(container_id="missing")
            failed = await stub.update_containers(
                [update, missing], [nri.ContainerEviction(container_id="ctr9", reason="why")])
            assert [u.container_id for u in failed] == ["missing"]
            updates, evictions = host.applied[-1]
            assert (updates[0].container_id, updates[0].linux.resources.cpu.shares.value) == (
                "ctr1", 512)
            assert [(e.container_id, e.reason) for e in evictions] == [("ctr9", "why")]

    run(scenario)


def test_a_pre_installed_plugin_is_started_with_its_config(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    script = plugins / "07-stub"
    script.write_text(f"#!/bin/sh\ncd {REPO} && exec {sys.executable} -m "
                      f"tests.fixtures.nri_plugin --events {events}\n")
    script.chmod(0o755)
    (plugins / "not-a-plugin").write_text("")  # not executable: ignored
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "stub.conf").write_text("verbose: true\n")

    async def scenario() -> None:
        cfg = config(tmp_path, socket_path="")
        async with running(cfg) as service:
            # Started (registered, configured, synchronized) before start() returns.
            assert [p.full_name for p in service.plugins] == ["07-stub"]
            process = service.plugins[0].process
            assert process is not None
            text = events.read_text()
            assert '"config": "verbose: true\\n"' in text
            assert '"method": "Synchronize"' in text
        assert process.returncode is not None  # stopped with the daemon

    run(scenario)


def test_a_socket_that_cannot_be_served_leaves_nri_without_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        long = tmp_path / ("d" * 120) / "nri.sock"  # beyond a unix socket address
        cfg = config(tmp_path, socket_path=str(long))
        async with running(cfg) as service:
            assert not long.exists()
            assert service.plugins == []

    run(scenario)
