"""CDI edits realized from the host and applied to an OCI spec."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sandbox.cdi.inject import DeviceNodeError, Injection, apply, realize
from sandbox.cdi.registry import Resolved
from sandbox.cdi.spec import Spec, parse

NULL = os.stat("/dev/null")


def resolved(edits: dict[str, Any], spec_edits: dict[str, Any] | None = None,
             name: str = "null0") -> list[Resolved]:
    doc: dict[str, Any] = {"cdiVersion": "0.6.0", "kind": "example.com/dev",
                           "devices": [{"name": name, "containerEdits": edits}]}
    if spec_edits:
        doc["containerEdits"] = spec_edits
    s: Spec = parse(doc, "/etc/cdi/x.json")
    return [Resolved(f"example.com/dev={name}", s, s.devices[name])]


def base_spec() -> dict[str, Any]:
    return {
        "process": {"user": {"uid": 1000, "gid": 1000}, "env": ["PATH=/bin", "A=old"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/data", "type": "bind", "source": "/x", "options": ["rbind"]}],
        "linux": {"devices": [{"path": "/dev/null0", "type": "c", "major": 9, "minor": 9}],
                  "resources": {"devices": [{"allow": False, "access": "rwm"}]}},
        "hooks": {"createContainer": [{"path": "/usr/libexec/oci/hooks.d/other"}]},
    }


def test_a_device_node_takes_type_and_numbers_from_the_host() -> None:
    inj = realize(resolved({"deviceNodes": [{"path": "/dev/null0", "hostPath": "/dev/null"}]}))
    ((entry, access),) = inj.devices
    assert entry == {"path": "/dev/null0", "type": "c", "major": os.major(NULL.st_rdev),
                     "minor": os.minor(NULL.st_rdev), "fileMode": NULL.st_mode & 0o7777}
    assert access == "rwm"


def test_a_fully_described_node_needs_no_host_node() -> None:
    inj = realize(resolved({"deviceNodes": [
        {"path": "/dev/vfoo", "type": "b", "major": 250, "minor": 7, "permissions": "r",
         "fileMode": 0o600, "uid": 0, "gid": 6}]}))
    assert inj.devices == (({"path": "/dev/vfoo", "type": "b", "major": 250, "minor": 7,
                             "fileMode": 0o600, "uid": 0, "gid": 6}, "r"),)


@pytest.mark.parametrize("node,message", [
    ({"path": "/dev/missing0"}, "CDI device example.com/dev=null0: host device /dev/missing0"),
    ({"path": "/dev/x", "hostPath": "/etc/hostname"}, "is not a device node"),
    ({"path": "/dev/x", "hostPath": "/dev/null", "type": "b"}, "host device /dev/null is of type c"),
])
def test_a_node_the_host_cannot_provide_fails_naming_the_device(
        node: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceNodeError, match=message):
        realize(resolved({"deviceNodes": [node]}))


def test_apply_merges_every_kind_of_edit() -> None:
    spec = base_spec()
    inj = realize(resolved(
        {"deviceNodes": [{"path": "/dev/null0", "hostPath": "/dev/null", "permissions": "rw"},
                         {"path": "/dev/hidden", "hostPath": "/dev/null", "permissions": "none"}],
         "env": ["A=new", "B=1"],
         "mounts": [{"hostPath": "/srv", "containerPath": "/data/sub", "options": ["bind"]}]},
        spec_edits={
            "mounts": [{"hostPath": "/etc", "containerPath": "/data", "options": ["ro", "rbind"],
                        "type": "bind"}],
            "hooks": [{"hookName": "createContainer", "path": "/bin/hook", "args": ["hook", "x"],
                       "env": ["H=1"], "timeout": 3},
                      {"hookName": "poststop", "path": "/bin/done"}],
            "additionalGids": [44, 1000]}))
    apply(spec, inj)
    assert spec["process"]["env"] == ["PATH=/bin", "A=new", "B=1"]
    assert spec["process"]["user"]["additionalGids"] == [44, 1000]
    major, minor = os.major(NULL.st_rdev), os.minor(NULL.st_rdev)
    devices = {d["path"]: d for d in spec["linux"]["devices"]}
    assert set(devices) == {"/dev/null0", "/dev/hidden"}  # the old /dev/null0 was replaced
    # No owner of their own: the container user's.
    assert (devices["/dev/null0"]["major"], devices["/dev/null0"]["uid"],
            devices["/dev/null0"]["gid"]) == (major, 1000, 1000)
    # One allow rule, after the default deny; "none" gets the node but no access.
    assert spec["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rw"}]
    # /data replaced, parents before children.
    assert [(m["destination"], m["source"]) for m in spec["mounts"]] == [
        ("/proc", "proc"), ("/data", "/etc"), ("/data/sub", "/srv")]
    assert "type" not in spec["mounts"][2]
    # Appended to what was there, in order.
    assert spec["hooks"]["createContainer"] == [
        {"path": "/usr/libexec/oci/hooks.d/other"},
        {"path": "/bin/hook", "args": ["hook", "x"], "env": ["H=1"], "timeout": 3}]
    assert spec["hooks"]["poststop"] == [{"path": "/bin/done"}]


def test_spec_wide_edits_come_once_for_several_devices_of_a_spec() -> None:
    doc: dict[str, Any] = {"cdiVersion": "0.6.0", "kind": "example.com/dev",
                           "containerEdits": {"env": ["SHARED=1"]},
                           "devices": [{"name": n, "containerEdits": {"env": [f"{n.upper()}=1"]}}
                                       for n in ("a", "b")]}
    s = parse(doc, "/x.json")
    inj = realize([Resolved(f"example.com/dev={n}", s, s.devices[n]) for n in ("a", "b")])
    assert inj.env == ("SHARED=1", "A=1", "B=1")
    assert inj.names == ("example.com/dev=a", "example.com/dev=b")


def test_apply_of_nothing_changes_nothing() -> None:
    spec = base_spec()
    apply(spec, Injection(names=()))
    assert spec == base_spec()
