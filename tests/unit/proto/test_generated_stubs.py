"""The committed stubs in cri/api are what proto/generate.py makes from proto/api.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cri.api import api_pb2

REPO = Path(__file__).resolve().parents[3]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi"):
        fresh = (tmp_path / name).read_bytes()
        committed = (REPO / "cri" / "api" / name).read_bytes()
        assert fresh == committed, f"cri/api/{name} is stale: run proto/generate.py"


def test_service_shapes_match_cri_v1() -> None:
    services = api_pb2.DESCRIPTOR.services_by_name
    assert len(services["RuntimeService"].methods) == 35
    assert len(services["ImageService"].methods) == 6
    streaming = {m.name for m in services["RuntimeService"].methods if m.server_streaming}
    assert {"StreamPodSandboxes", "StreamContainers", "GetContainerEvents"} <= streaming
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"


def test_wire_numbers_spot_checks() -> None:
    def num(msg: type, field: str) -> int:
        return msg.DESCRIPTOR.fields_by_name[field].number  # type: ignore[attr-defined,no-any-return]

    assert num(api_pb2.PodSandboxConfig, "metadata") == 1
    assert num(api_pb2.PodSandboxConfig, "linux") == 8
    assert num(api_pb2.LinuxPodSandboxConfig, "cgroup_parent") == 1
    assert num(api_pb2.LinuxPodSandboxConfig, "sysctls") == 3
    assert num(api_pb2.RunPodSandboxRequest, "runtime_handler") == 2
    assert num(api_pb2.ContainerConfig, "log_path") == 11
    assert api_pb2.NamespaceMode.Value("NODE") == 2
