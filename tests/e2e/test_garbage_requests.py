"""Garbage on the daemon's socket: bytes that do not parse as the method's request are
INVALID_ARGUMENT for every RPC of both services (streaming ones too), one debug line each in
the daemon's log, no ERROR and no traceback, and the daemon answers as before afterwards."""

from __future__ import annotations

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.helpers import Daemon
from tests.fixtures import garbage

pytestmark = [pytest.mark.e2e, pytest.mark.node]


def test_garbage_requests_are_invalid_argument(daemon: Daemon) -> None:
    logged_before = daemon.log.stat().st_size
    codes: dict[str, set[grpc.StatusCode]] = {}
    sent = 0
    with daemon.channel() as ch:
        for method in garbage.methods():
            for body in method.bodies:
                codes.setdefault(method.name, set()).add(garbage.send(ch, method, body))
                sent += 1

    assert codes == {name: {grpc.StatusCode.INVALID_ARGUMENT} for name in codes}
    assert {"RunPodSandbox", "GetContainerEvents", "PullImage", "ImageFsInfo"} <= codes.keys()
    assert daemon.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "pycri"
    with daemon.log.open("rb") as f:
        f.seek(logged_before)
        lines = f.read().decode(errors="replace").splitlines()
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line]
    assert len([line for line in lines if "does not parse" in line]) == sent
