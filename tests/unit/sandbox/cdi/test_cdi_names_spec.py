"""CDI names, annotations and spec files as a runtime reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.cdi.names import InvalidName, from_annotations, parse_qualified
from sandbox.cdi.spec import SpecError, load, parse


@pytest.mark.parametrize("name,expected", [
    ("example.com/dev=null0", ("example.com/dev", "null0")),
    ("nvidia.com/gpu=GPU-1:2", ("nvidia.com/gpu", "GPU-1:2")),
    ("a/b=0", ("a/b", "0")),
])
def test_qualified_names(name: str, expected: tuple[str, str]) -> None:
    assert parse_qualified(name) == expected


@pytest.mark.parametrize("name", [
    "null0", "example.com=null0", "example.com/dev", "example.com/dev=", "/dev/null",
    "example.com/dev/x=a", "1vendor.com/dev=a", "example.com/dev=-a", "example.com/dev=a b",
])
def test_unqualified_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="fully qualified"):
        parse_qualified(name)


def test_annotations_list_devices_by_key_and_ignore_others() -> None:
    got = from_annotations({
        "cdi.k8s.io/z-plugin": "example.com/dev=b",
        "cdi.k8s.io/a-plugin": "example.com/dev=a,vendor.io/gpu=0",
        "io.kubernetes.container.hash": "x", "example.com/dev": "y"})
    assert got == ["example.com/dev=a", "vendor.io/gpu=0", "example.com/dev=b"]


def test_an_annotation_with_an_unqualified_device_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidName, match=r"annotation cdi\.k8s\.io/x: 'gpu0'"):
        from_annotations({"cdi.k8s.io/x": "example.com/dev=a,gpu0"})


SPEC = {
    "cdiVersion": "0.6.0",
    "kind": "example.com/dev",
    "devices": [{"name": "null0", "containerEdits": {
        "deviceNodes": [{"path": "/dev/null0", "hostPath": "/dev/null", "permissions": "rw"}],
        "env": ["A=1"]}}],
    "containerEdits": {
        "mounts": [{"hostPath": "/etc/hostname", "containerPath": "/cdi/host",
                    "options": ["ro", "bind"]}],
        "hooks": [{"hookName": "createContainer", "path": "/bin/true", "args": ["true"],
                   "timeout": 5}],
        "additionalGids": [0, 44]},
}


def test_json_and_yaml_read_alike(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(SPEC))
    (tmp_path / "a.yaml").write_text(
        "cdiVersion: 0.6.0\nkind: example.com/dev\ndevices:\n- name: null0\n"
        "  containerEdits:\n    deviceNodes:\n    - path: /dev/null0\n      hostPath: /dev/null\n"
        "      permissions: rw\n    env: [A=1]\ncontainerEdits:\n  mounts:\n"
        "  - {hostPath: /etc/hostname, containerPath: /cdi/host, options: [ro, bind]}\n"
        "  hooks:\n  - {hookName: createContainer, path: /bin/true, args: [\"true\"], "
        "timeout: 5}\n  additionalGids: [0, 44]\n")
    js, ym = load(tmp_path / "a.json"), load(tmp_path / "a.yaml")
    assert js.devices == ym.devices and js.edits == ym.edits and js.kind == ym.kind
    node = js.devices["null0"].device_nodes[0]
    assert (node.path, node.host_path, node.permissions, node.major) == (
        "/dev/null0", "/dev/null", "rw", None)
    assert js.edits.additional_gids == (44,)  # a 0 is ignored, as the spec says
    assert js.edits.hooks[0].stage == "createContainer"


def _with(path: str, value: object) -> dict[str, object]:
    """SPEC with the value at a dotted path replaced (``None`` deletes it)."""
    doc = json.loads(json.dumps(SPEC))
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize("path,value,message", [
    ("cdiVersion", "9.0.0", "cdiVersion '9.0.0'"),
    ("cdiVersion", None, "cdiVersion is required"),
    ("kind", "example.com", "not a CDI kind"),
    ("devices", [], "at least one device"),
    ("devices.0.name", "bad name", "not a CDI device name"),
    ("devices.0.containerEdits", {}, "no containerEdits"),
    ("devices.0.extra", 1, "unknown field"),
    ("devices.0.containerEdits.netDevices", [{"hostInterfaceName": "a", "name": "b"}],
     "netDevices edits are not supported"),
    ("devices.0.containerEdits.env", ["=x"], "not NAME=value"),
    ("devices.0.containerEdits.deviceNodes.0.permissions", "rx", "permissions 'rx'"),
    ("devices.0.containerEdits.deviceNodes.0.type", "x", "type 'x'"),
    ("devices.0.containerEdits.deviceNodes.0.path", "dev/null0", "not an absolute path"),
    ("devices.0.containerEdits.deviceNodes.0.major", True, "major is not"),
    ("containerEdits.hooks.0.hookName", "prestop", "hookName 'prestop'"),
    ("containerEdits.hooks.0.timeout", 0, "greater than zero"),
    ("containerEdits.mounts.0.containerPath", None, "containerPath is required"),
])
def test_invalid_specs_are_refused_saying_why(path: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse(_with(path, value), "/etc/cdi/x.json")
    assert str(info.value).startswith("/etc/cdi/x.json: ")
    # The kind, where it could be read, tells which requests the broken file concerns.
    assert info.value.kind == ("example.com" if path == "kind" else "example.com/dev")


def test_a_duplicate_device_is_refused() -> None:
    doc = _with("devices", SPEC["devices"] * 2)  # type: ignore[operator]
    with pytest.raises(SpecError, match="listed twice"):
        parse(doc, "x.json")


@pytest.mark.parametrize("text,suffix", [("{not json", ".json"), ("a: [b", ".yaml"),
                                          ("- a\n- b\n", ".yaml")])
def test_unreadable_files_have_no_kind(tmp_path: Path, text: str, suffix: str) -> None:
    path = tmp_path / f"x{suffix}"
    path.write_text(text)
    with pytest.raises(SpecError, match=str(path)) as info:
        load(path)
    assert info.value.kind is None
