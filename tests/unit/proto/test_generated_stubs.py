"""The committed stubs in cri/api are what proto/generate.py makes from proto/api.proto, and the
proto has the shape of the upstream CRI v1 API (k8s.io/cri-api v0.36)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.message import Message

from cri.api import api_pb2

REPO = Path(__file__).resolve().parents[3]
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi")

RUNTIME_RPCS = [
    "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus",
    "ListPodSandbox", "StreamPodSandboxes", "CreateContainer", "StartContainer", "StopContainer",
    "RemoveContainer", "ListContainers", "StreamContainers", "ContainerStatus",
    "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec", "Attach", "PortForward",
    "ContainerStats", "ListContainerStats", "StreamContainerStats", "PodSandboxStats",
    "ListPodSandboxStats", "StreamPodSandboxStats", "UpdateRuntimeConfig", "Status",
    "CheckpointContainer", "GetContainerEvents", "ListMetricDescriptors", "ListPodSandboxMetrics",
    "StreamPodSandboxMetrics", "RuntimeConfig", "UpdatePodSandboxResources",
]
IMAGE_RPCS = ["ListImages", "StreamImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    stale = [name for name in GENERATED
             if (tmp_path / name).read_bytes() != (REPO / "cri" / "api" / name).read_bytes()]
    assert not stale, (f"cri/api/{', '.join(stale)} differ from proto/api.proto: "
                       "run `.venv/bin/python proto/generate.py` and commit the result")


def test_stubs_import_package_absolute() -> None:
    for name in ("api_pb2_grpc.py", "api_pb2_grpc.pyi"):
        text = (REPO / "cri" / "api" / name).read_text()
        assert "from cri.api import api_pb2 as" in text
        assert "\nimport api_pb2" not in text


def test_service_shapes_match_cri_v1() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    services = api_pb2.DESCRIPTOR.services_by_name
    runtime, image = services["RuntimeService"], services["ImageService"]
    assert len(runtime.methods) == 35
    assert len(image.methods) == 6
    assert [m.name for m in runtime.methods] == RUNTIME_RPCS
    assert [m.name for m in image.methods] == IMAGE_RPCS
    streaming = {m.name for m in (*runtime.methods, *image.methods) if m.server_streaming}
    assert streaming == {"StreamPodSandboxes", "StreamContainers", "StreamContainerStats",
                         "StreamPodSandboxStats", "GetContainerEvents", "StreamPodSandboxMetrics",
                         "StreamImages"}
    assert not any(m.client_streaming for m in (*runtime.methods, *image.methods))
    assert runtime.methods_by_name["GetContainerEvents"].input_type.name == "GetEventsRequest"
    assert runtime.methods_by_name["GetContainerEvents"].output_type.name == "ContainerEventResponse"


def _num(msg: type[Message], field: str) -> int:
    return msg.DESCRIPTOR.fields_by_name[field].number


def test_wire_numbers_spot_checks() -> None:
    assert _num(api_pb2.PodSandboxConfig, "metadata") == 1
    assert _num(api_pb2.PodSandboxConfig, "linux") == 8
    assert _num(api_pb2.LinuxPodSandboxConfig, "cgroup_parent") == 1
    assert _num(api_pb2.LinuxPodSandboxConfig, "sysctls") == 3
    assert _num(api_pb2.RunPodSandboxRequest, "runtime_handler") == 2
    assert _num(api_pb2.ContainerConfig, "log_path") == 11
    assert _num(api_pb2.ContainerConfig, "CDI_devices") == 17
    assert _num(api_pb2.ContainerConfig, "stop_signal") == 18
    assert _num(api_pb2.LinuxSandboxSecurityContext, "run_as_group") == 8
    assert _num(api_pb2.LinuxContainerSecurityContext, "supplemental_groups_policy") == 17
    assert _num(api_pb2.Mount, "uidMappings") == 6
    assert _num(api_pb2.ImageSpec, "user_specified_image") == 18
    assert _num(api_pb2.Namespace, "options") == 2
    assert _num(api_pb2.ContainerStatus, "image_id") == 17
    assert _num(api_pb2.PodSandboxStatusResponse, "containers_statuses") == 3
    assert api_pb2.KeyValue.DESCRIPTOR.fields_by_name["value"].type == 12  # TYPE_BYTES
    assert api_pb2.NamespaceMode.Value("NODE") == 2
    assert api_pb2.Signal.Value("SIGRTMAX") == 65
    assert api_pb2.CgroupDriver.Value("CGROUPFS") == 1
