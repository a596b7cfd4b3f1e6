"""What CreateContainer matches hook files against: the final spec's args and annotations over
the pod's annotations (as CRI-O), and bind mounts from the host in the CRI request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cri.api import api_pb2
from cri.runtime.oci_hooks import add_hooks
from sandbox.oci.hook_dirs import HookDirs


def hooks_dir(tmp_path: Path, **whens: dict[str, Any]) -> HookDirs:
    for name, when in whens.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "version": "1.0.0", "hook": {"path": "/bin/sh", "args": ["sh", name]},
            "when": when, "stages": ["prestart"]}))
    return HookDirs([str(tmp_path)])


def spec(**annotations: str) -> dict[str, Any]:
    return {"process": {"args": ["/bin/sleep", "1"]}, "annotations": annotations,
            "hooks": {"prestart": [{"path": "/nri"}]}}


def test_pod_annotations_count_and_the_spec_s_own_win(tmp_path: Path) -> None:
    dirs = hooks_dir(tmp_path, gpu={"annotations": {"^example.com/gpu$": "^yes$"}})
    assert add_hooks(dirs, spec(), {"example.com/gpu": "yes"}, [], "c") == ["gpu.json"]
    assert add_hooks(dirs, spec(**{"example.com/gpu": "no"}), {"example.com/gpu": "yes"}, [],
                     "c") == []
    s = spec(**{"example.com/gpu": "yes"})
    assert add_hooks(dirs, s, {}, [], "c") == ["gpu.json"]
    assert s["hooks"]["prestart"] == [{"path": "/nri"}, {"path": "/bin/sh", "args": ["sh", "gpu"]}]


def test_bind_mounts_are_host_paths_in_the_request(tmp_path: Path) -> None:
    dirs = hooks_dir(tmp_path, binds={"hasBindMounts": True},
                     sleepers={"commands": ["/sleep$"]})
    host = api_pb2.Mount(container_path="/data", host_path="/srv/data")
    image = api_pb2.Mount(container_path="/img", image=api_pb2.ImageSpec(image="x"))
    assert add_hooks(dirs, spec(), {}, [host], "c") == ["binds.json", "sleepers.json"]
    assert add_hooks(dirs, spec(), {}, [image], "c") == ["sleepers.json"]
