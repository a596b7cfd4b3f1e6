"""Which CDI devices a CreateContainer asks for, and the refusals a kubelet sees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cri.api import api_pb2
from cri.errors import InvalidArgument
from cri.runtime.cdi_devices import requested, resolve
from sandbox.cdi.registry import Registry


def config(*names: str, **annotations: str) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(CDI_devices=[api_pb2.CDIDevice(name=n) for n in names],
                                   annotations=annotations)


def test_the_field_then_pod_then_container_annotations_each_device_once() -> None:
    cfg = config("example.com/dev=a", **{"cdi.k8s.io/plugin": "example.com/dev=b,example.com/dev=a",
                                         "other": "example.com/dev=z"})
    assert requested(cfg, {"cdi.k8s.io/pod": "example.com/dev=c"}) == [
        "example.com/dev=a", "example.com/dev=c", "example.com/dev=b"]
    assert requested(config(), {}) == []


def test_an_annotation_naming_no_qualified_device_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"cdi\.k8s\.io/x"):
        requested(config(**{"cdi.k8s.io/x": "gpu0"}), {})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    (tmp_path / "dev.yaml").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "example.com/dev",
        "devices": [{"name": "null0", "containerEdits": {
                        "deviceNodes": [{"path": "/dev/null0", "hostPath": "/dev/null"}]}},
                    {"name": "gone", "containerEdits": {
                        "deviceNodes": [{"path": "/dev/gone", "hostPath": "/dev/nonexistent-x"}]}}]}))
    return Registry([tmp_path])


def test_resolved_devices_become_an_injection(registry: Registry) -> None:
    assert resolve(registry, []) is None
    inj = resolve(registry, ["example.com/dev=null0"])
    assert inj is not None and inj.names == ("example.com/dev=null0",)
    ((entry, _),) = inj.devices
    assert entry["major"] == os.major(os.stat("/dev/null").st_rdev)


@pytest.mark.parametrize("names,message", [
    (["example.com/dev=null0", "example.com/dev=nope"], "unresolvable CDI devices: example.com/dev=nope"),
    (["null0"], "unresolvable CDI devices: null0: 'null0' is not a fully qualified"),
    (["example.com/dev=gone"], "CDI device example.com/dev=gone: host device /dev/nonexistent-x"),
])
def test_a_device_that_cannot_be_given_is_invalid_argument_naming_it(
        registry: Registry, names: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve(registry, names)
    assert message in str(info.value)
