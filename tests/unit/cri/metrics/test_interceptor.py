"""The metrics interceptor, outside cri/interceptor.py on a real grpc.aio server: every call is
counted once under the code the client saw, unary and streaming, garbage and cancellations
included, and the calls themselves are unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api import api_pb2, api_pb2_grpc
from cri.errors import FailedPrecondition
from cri.interceptor import CRIInterceptor
from cri.metrics.interceptor import MetricsInterceptor
from cri.metrics.registry import Metrics
from cri.runtime.unimplemented import fill_unimplemented
from tests.unit.cri import test_interceptor as interceptor_test
from tests.unit.cri.test_interceptor import serving

SERVICE = "/runtime.v1.RuntimeService/"


class Servicer(interceptor_test.Servicer):
    """The error-mapping test's servicer, plus a call that outlives its deadline, a stream that
    may fail half-way and one that never ends."""

    async def Version(self, request: Any, context: Any) -> api_pb2.VersionResponse:
        if request.version == "slow":
            await asyncio.sleep(3600)
        return await super().Version(request, context)

    async def StreamPodSandboxes(self, request: Any, context: Any) -> Any:
        yield api_pb2.StreamPodSandboxesResponse()
        if request.filter.id == "fail":
            raise FailedPrecondition("half-way")

    async def GetContainerEvents(self, request: Any, context: Any) -> Any:
        yield api_pb2.ContainerEventResponse(container_id="first")
        await asyncio.sleep(3600)  # an event stream: it ends when the client leaves


fill_unimplemented(Servicer, "RuntimeService")


def counts(metrics: Metrics) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        if family.name == "pycri_grpc_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.labels["method"], s.labels["code"])] = s.value
    return out


def observed(metrics: Metrics, method: str) -> float:
    value = metrics.registry.get_sample_value("pycri_grpc_request_duration_seconds_count",
                                              {"method": method})
    return value or 0.0


async def _scenario(sock: Path) -> Metrics:
    metrics = Metrics()
    gate = CRIInterceptor()
    async with serving(sock, Servicer(), MetricsInterceptor(metrics), gate) as ch:  # type: ignore[abstract]
        stub = api_pb2_grpc.RuntimeServiceStub(ch)

        async def version(v: str) -> grpc.StatusCode:
            try:
                reply = await stub.Version(api_pb2.VersionRequest(version=v))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            assert reply.runtime_name == "ok"  # the reply passes through unchanged
            return grpc.StatusCode.OK

        assert await version("") == grpc.StatusCode.UNAVAILABLE
        gate.ready = True
        for v, want in (("", "OK"), ("", "OK"), ("missing", "NOT_FOUND"), ("boom", "INTERNAL")):
            assert (await version(v)).name == want
        garbage = ch.unary_unary(SERVICE + "Version")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await garbage(b"\xff\xff\xff")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Version(api_pb2.VersionRequest(version="slow"), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/runtime.v1.RuntimeService/NoSuchMethod")(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        assert len([r async for r in stub.StreamPodSandboxes(
            api_pb2.StreamPodSandboxesRequest())]) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamPodSandboxes(api_pb2.StreamPodSandboxesRequest(
                    filter=api_pb2.PodSandboxFilter(id="fail"))):
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        events = stub.GetContainerEvents(api_pb2.GetEventsRequest())
        assert (await events.read()).container_id == "first"
        events.cancel()
        for _ in range(200):  # the server notices the cancellation on its own schedule
            if observed(metrics, "GetContainerEvents"):
                break
            await asyncio.sleep(0.01)
    return metrics

def test_every_call_is_counted_under_the_code_its_client_saw(tmp_path: Path) -> None:
    metrics = asyncio.run(_scenario(tmp_path / "s.sock"))
    assert counts(metrics) == {
        ("Version", "UNAVAILABLE"): 1, ("Version", "OK"): 2, ("Version", "NOT_FOUND"): 1,
        ("Version", "INTERNAL"): 1, ("Version", "INVALID_ARGUMENT"): 1,
        ("Version", "DEADLINE_EXCEEDED"): 1,
        ("StreamPodSandboxes", "OK"): 1, ("StreamPodSandboxes", "FAILED_PRECONDITION"): 1,
        ("GetContainerEvents", "CANCELLED"): 1,
    }
    # One latency observation per call, under the method alone.
    assert observed(metrics, "Version") == 7
    assert observed(metrics, "StreamPodSandboxes") == 2
    assert observed(metrics, "NoSuchMethod") == 0
