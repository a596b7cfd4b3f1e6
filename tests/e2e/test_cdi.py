"""CDI devices against a real daemon, runc and conmon: a daemon whose [pycri.cdi] spec_dirs are
two directories of the test's own, and a spec that maps ``example.com/dev=null0`` to /dev/null
at /dev/null0 with an environment variable, a read-only mount and a hook. Each is seen from
inside the container (ExecSync) or, for the hook, by the file it writes; a device of no
spec is INVALID_ARGUMENT naming it and leaves nothing; a spec file changed or added between two
creates is honoured; a broken file refuses only its own devices."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api import api_pb2
from tests.e2e.containers import (
    Pod,
    create_refused,
    exec_ok,
    new_pod,
    remove_pod,
    serving,
)
from tests.e2e.helpers import Daemon, need_root

pytestmark = [pytest.mark.e2e, pytest.mark.node]

# Char major 120 is reserved for local/experimental use and never handed out dynamically: no
# driver answers it, so opening such a node says ENXIO once the device cgroup lets it through
# and EPERM while it does not (the rule CDI adds is what is observed).
EXPERIMENTAL_MAJOR = 120
TRUSTED = "cdi-pods"


class CDI:
    def __init__(self, d: Daemon) -> None:
        self.daemon = d
        self.static = d.base / "cdi-static"
        self.dynamic = d.base / "cdi-dynamic"
        self.static.mkdir()  # the dynamic one appears later, as /var/run/cdi does at boot
        self.data = d.base / "cdi-data"
        self.data.mkdir()
        (self.data / "hello").write_text("from the host\n")
        self.hook_log = d.base / "cdi-hook.log"
        self.fake = d.base / "fake-dev"
        os.mknod(self.fake, 0o666 | 0o020000, os.makedev(EXPERIMENTAL_MAJOR, 7))
        with d.config_path.open("a") as f:
            f.write(f'[pycri.cdi]\nspec_dirs = ["{self.static}", "{self.dynamic}"]\n'
                    # Pods of this RuntimeClass may ask for CDI devices in their annotations.
                    f'[pycri.runtime.handlers.{TRUSTED}]\nruntime_path = "runc"\n'
                    'allowed_annotations = ["cdi.k8s.io/*"]\n')

    def write(self, directory: Path, name: str, doc: dict[str, Any]) -> None:
        """As drivers write specs: a new file renamed over the old one."""
        directory.mkdir(exist_ok=True)
        tmp = directory / f".{name}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.rename(directory / name)

    def dev_spec(self, env_value: str = "yes") -> dict[str, Any]:
        return {
            "cdiVersion": "0.6.0",
            "kind": "example.com/dev",
            "devices": [
                {"name": "null0", "containerEdits": {
                    "deviceNodes": [{"path": "/dev/null0", "hostPath": "/dev/null",
                                     "permissions": "rw"}],
                    "env": [f"CDI_NULL0={env_value}"]}},
                {"name": "fake0", "containerEdits": {
                    "deviceNodes": [{"path": "/dev/fake0", "hostPath": str(self.fake)}]}},
                {"name": "locked", "containerEdits": {
                    "deviceNodes": [{"path": "/dev/locked", "hostPath": str(self.fake),
                                     "permissions": "none"}]}},
            ],
            # Applied once for any device of this spec.
            "containerEdits": {
                "mounts": [{"hostPath": str(self.data), "containerPath": "/cdi/data",
                            "type": "bind", "options": ["rbind", "ro", "nosuid", "nodev"]}],
                "hooks": [{"hookName": "createRuntime", "path": "/bin/sh",
                           "args": ["sh", "-c", f"cat >> {self.hook_log}; echo >> {self.hook_log}"]}],
            },
        }


@pytest.fixture(scope="module")
def cdi() -> Iterator[CDI]:
    need_root()
    d = Daemon.new("cdi")
    c = CDI(d)
    c.write(c.static, "dev.json", c.dev_spec())
    with serving(d):
        yield c


@pytest.fixture
def pod(cdi: CDI, tmp_path: Path) -> Iterator[Pod]:
    p = new_pod(cdi.daemon, tmp_path)
    try:
        yield p
    finally:
        remove_pod(p)


def config(pod: Pod, name: str, *devices: str, annotations: dict[str, str] | None = None,
           command: list[str] | None = None) -> api_pb2.ContainerConfig:
    cfg = pod.container_config(name, command or ["sleep", "600"])
    cfg.CDI_devices.extend(api_pb2.CDIDevice(name=n) for n in devices)
    cfg.annotations.update(annotations or {})
    return cfg


def run(pod: Pod, name: str, *devices: str, annotations: dict[str, str] | None = None) -> str:
    ctr = pod.create(config(pod, name, *devices, annotations=annotations))
    pod.rt.StartContainer(api_pb2.StartContainerRequest(container_id=ctr), timeout=60)
    return ctr


def sh(pod: Pod, ctr: str, script: str) -> api_pb2.ExecSyncResponse:
    return pod.exec(ctr, ["sh", "-c", script])


def test_a_device_of_the_cdi_field_brings_node_env_mount_and_hook(cdi: CDI, pod: Pod) -> None:
    ctr = run(pod, "field", "example.com/dev=null0")
    assert exec_ok(pod, ctr, ["stat", "-c", "%F %t:%T", "/dev/null0"]).strip() == \
        "character special file 1:3"
    assert exec_ok(pod, ctr, ["sh", "-c", "echo x > /dev/null0 && echo written"]).strip() == \
        "written"
    assert "CDI_NULL0=yes" in exec_ok(pod, ctr, ["env"]).splitlines()
    assert exec_ok(pod, ctr, ["cat", "/cdi/data/hello"]) == "from the host\n"
    res = sh(pod, ctr, "touch /cdi/data/new")
    assert res.exit_code != 0 and b"Read-only" in res.stderr
    # The spec's hook ran at createRuntime with the container's state on stdin.
    states = [json.loads(line) for line in cdi.hook_log.read_text().splitlines() if line]
    assert ctr in [s["id"] for s in states]
    # Devices it did not ask for are not there.
    assert sh(pod, ctr, "test -e /dev/fake0").exit_code != 0


def test_a_device_of_a_cdi_annotation_is_given_too(cdi: CDI, pod: Pod) -> None:
    ctr = run(pod, "annotated", annotations={
        "cdi.k8s.io/example-plugin": "example.com/dev=null0,example.com/dev=fake0"})
    assert "CDI_NULL0=yes" in exec_ok(pod, ctr, ["env"]).splitlines()
    assert exec_ok(pod, ctr, ["stat", "-c", "%F %t:%T", "/dev/fake0"]).strip() == \
        f"character special file {EXPERIMENTAL_MAJOR:x}:7"
    # The device cgroup lets it through: no driver behind it (ENXIO), not EPERM.
    res = sh(pod, ctr, "cat /dev/fake0")
    assert res.exit_code != 0 and b"No such device or address" in res.stderr, res.stderr


def test_pod_annotations_count_only_where_the_handler_lets_them_in(
        cdi: CDI, tmp_path: Path) -> None:
    # Anyone who may create a pod writes its annotations: by default they grant no device.
    wanted = {"cdi.k8s.io/pod": "example.com/dev=null0"}
    for handler, given in (("", False), (TRUSTED, True)):
        p = new_pod(cdi.daemon, tmp_path / (handler or "default"), runtime_handler=handler,
                    annotations=wanted)
        try:
            ctr = run(p, "from-pod")
            assert ("CDI_NULL0=yes" in exec_ok(p, ctr, ["env"]).splitlines()) == given
            assert (sh(p, ctr, "test -c /dev/null0").exit_code == 0) == given
        finally:
            remove_pod(p)


def test_a_device_node_with_no_permissions_is_there_but_cannot_be_opened(
        cdi: CDI, pod: Pod) -> None:
    ctr = run(pod, "locked", "example.com/dev=locked")
    res = sh(pod, ctr, "test -c /dev/locked && cat /dev/locked")
    assert res.exit_code != 0 and b"Operation not permitted" in res.stderr, res.stderr


def test_an_unknown_device_is_invalid_argument_and_leaves_nothing(cdi: CDI, pod: Pod) -> None:
    for cfg in (
        config(pod, "unknown", "example.com/dev=null0", "example.com/dev=gpu9"),
        config(pod, "unknown-ann", annotations={"cdi.k8s.io/x": "vendor.io/nothing=0"}),
        config(pod, "unqualified", "null0"),
    ):
        err = create_refused(pod, cfg)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        requested = [d.name for d in cfg.CDI_devices if d.name != "example.com/dev=null0"]
        requested += list(cfg.annotations.values())
        assert all(name in (err.details() or "") for name in requested), err.details()


def test_changed_and_added_spec_files_are_honoured_at_the_next_create(
        cdi: CDI, pod: Pod) -> None:
    first = run(pod, "before", "example.com/dev=null0")
    try:
        cdi.write(cdi.static, "dev.json", cdi.dev_spec(env_value="changed"))
        second = run(pod, "after", "example.com/dev=null0")
        assert "CDI_NULL0=changed" in exec_ok(pod, second, ["env"]).splitlines()
        assert "CDI_NULL0=yes" in exec_ok(pod, first, ["env"]).splitlines()
        # The later directory, made only now, overrides the static one.
        cdi.write(cdi.dynamic, "dev.yaml", cdi.dev_spec(env_value="dynamic"))
        third = run(pod, "dynamic", "example.com/dev=null0")
        assert "CDI_NULL0=dynamic" in exec_ok(pod, third, ["env"]).splitlines()
    finally:
        (cdi.dynamic / "dev.yaml").unlink(missing_ok=True)
        cdi.write(cdi.static, "dev.json", cdi.dev_spec())


def test_a_broken_spec_file_refuses_only_its_own_devices(cdi: CDI, pod: Pod) -> None:
    broken = cdi.static / "gpu.json"
    broken.write_text('{"cdiVersion": "0.6.0", "kind": "vendor.io/gpu", "devices": [{"name": "0"}]}')
    try:
        ctr = run(pod, "still-works", "example.com/dev=null0")
        assert "CDI_NULL0=yes" in exec_ok(pod, ctr, ["env"]).splitlines()
        err = create_refused(pod, config(pod, "gpu", "vendor.io/gpu=0"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = err.details() or ""
        assert "vendor.io/gpu=0" in details and str(broken) in details, details
    finally:
        broken.unlink()
