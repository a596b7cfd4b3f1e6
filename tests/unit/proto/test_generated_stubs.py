"""The committed modules in cri/api and cri/nri/api are what proto/generate.py makes from proto/,
and the protos have the shape of the upstream APIs: CRI v1 (k8s.io/cri-api v0.36), NRI
(github.com/containerd/nri v0.12.2) and ttrpc's envelope (github.com/containerd/ttrpc v1.2.7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.message import Message

from cri.api import api_pb2
from cri.nri.api import api_pb2 as nri_pb2
from cri.nri.api import ttrpc_pb2

REPO = Path(__file__).resolve().parents[3]
GENERATED = {
    "cri/api": ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py", "api_pb2_grpc.pyi"),
    "cri/nri/api": ("api_pb2.py", "api_pb2.pyi", "ttrpc_pb2.py", "ttrpc_pb2.pyi"),
}

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
    subprocess.run([sys.executable, str(REPO / "proto" / "generate.py"), "--root", str(tmp_path)],
                   check=True, capture_output=True)
    stale = [f"{package}/{name}" for package, names in GENERATED.items() for name in names
             if (tmp_path / package / name).read_bytes() != (REPO / package / name).read_bytes()]
    assert not stale, (f"{', '.join(stale)} differ from proto/: "
                       "run `.venv/bin/python proto/generate.py` and commit the result")
    # Nothing else is generated: no gRPC stubs for NRI, which runs over ttrpc.
    made = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert made == {f"{package}/{name}" for package, names in GENERATED.items() for name in names}


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


NRI_PLUGIN_RPCS = [
    "Configure", "Synchronize", "Shutdown", "RunPodSandbox", "UpdatePodSandbox",
    "PostUpdatePodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer",
    "PostCreateContainer", "StartContainer", "PostStartContainer", "UpdateContainer",
    "PostUpdateContainer", "StopContainer", "RemoveContainer", "StateChange",
    "ValidateContainerAdjustment",
]


def test_nri_service_shapes() -> None:
    # ttrpc routes by the fully qualified service name, so the package is part of the wire format.
    assert nri_pb2.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    services = nri_pb2.DESCRIPTOR.services_by_name
    assert services["Runtime"].full_name == "nri.pkg.api.v1alpha1.Runtime"
    assert [m.name for m in services["Runtime"].methods] == ["RegisterPlugin", "UpdateContainers"]
    assert [m.name for m in services["Plugin"].methods] == NRI_PLUGIN_RPCS
    plugin = services["Plugin"].methods_by_name
    assert plugin["Shutdown"].input_type.name == plugin["Shutdown"].output_type.name == "Empty"
    assert plugin["StateChange"].input_type.name == "StateChangeEvent"
    assert not any(m.client_streaming or m.server_streaming
                   for s in services.values() for m in s.methods)


def test_nri_wire_numbers_spot_checks() -> None:
    assert _num(nri_pb2.RegisterPluginRequest, "plugin_idx") == 2
    assert _num(nri_pb2.RegisterPluginRequest, "NRI_version") == 3
    assert _num(nri_pb2.ConfigureRequest, "request_timeout") == 5
    assert _num(nri_pb2.ConfigureResponse, "events") == 2  # 1 is unused upstream
    assert _num(nri_pb2.SynchronizeRequest, "more") == 3
    assert _num(nri_pb2.PodSandbox, "ips") == 10
    assert _num(nri_pb2.LinuxPodSandbox, "cgroup_parent") == 3
    assert _num(nri_pb2.Container, "CDI_devices") == 20
    assert _num(nri_pb2.Container, "image") == 22
    assert _num(nri_pb2.ContainerAdjustment, "annotations") == 2
    assert _num(nri_pb2.ContainerAdjustment, "args") == 9
    assert _num(nri_pb2.LinuxContainerAdjustment, "memory_policy") == 12
    assert _num(nri_pb2.LinuxResources, "pids") == 8
    assert _num(nri_pb2.LinuxCPU, "mems") == 7
    assert _num(nri_pb2.LinuxRdt, "remove") == 4
    assert _num(nri_pb2.ContainerUpdate, "ignore_failure") == 3
    assert _num(nri_pb2.ValidateContainerAdjustmentRequest, "plugins") == 6
    assert nri_pb2.Event.Value("VALIDATE_CONTAINER_ADJUSTMENT") == 14
    assert nri_pb2.Event.Value("LAST") == 15
    assert nri_pb2.ContainerState.Value("CONTAINER_STOPPED") == 4
    assert nri_pb2.Field.Value("MemoryPolicy") == 40
    assert nri_pb2.MpolMode.Value("MPOL_WEIGHTED_INTERLEAVE") == 6


def test_ttrpc_envelope_numbers() -> None:
    assert [(f.name, f.number) for f in ttrpc_pb2.Request.DESCRIPTOR.fields] == [
        ("service", 1), ("method", 2), ("payload", 3), ("timeout_nano", 4), ("metadata", 5)]
    assert [(f.name, f.number) for f in ttrpc_pb2.Response.DESCRIPTOR.fields] == [
        ("status", 1), ("payload", 2)]
    assert [(f.name, f.number) for f in ttrpc_pb2.KeyValue.DESCRIPTOR.fields] == [
        ("key", 1), ("value", 2)]
    # google.rpc.Status, which ttrpc's Go code puts in Response.status.
    assert [(f.name, f.number) for f in ttrpc_pb2.Status.DESCRIPTOR.fields] == [
        ("code", 1), ("message", 2), ("details", 3)]
    assert ttrpc_pb2.Request.DESCRIPTOR.fields_by_name["timeout_nano"].type == 3  # TYPE_INT64
