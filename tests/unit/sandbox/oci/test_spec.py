"""The infra spec builder and bundle writer: pure logic, no root needed."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.spec import (
    MASKED_PATHS,
    READONLY_PATHS,
    infra_spec,
    write_bundle,
)

NETNS = Path("/var/run/netns/pod1")


def build(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "hostname": "pod-host",
        "netns_path": NETNS,
        "host_ipc": False,
        "host_pid": False,
        "share_pid": False,
        "cgroups_path": "/kubepods/pod1/infra",
    }
    kwargs.update(overrides)
    return infra_spec(**kwargs)


def namespaces(spec: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in spec["linux"]["namespaces"]}


def mounts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    assert len(by_dest) == len(spec["mounts"]), "duplicate mount destinations"
    return by_dest


def test_pod_network_private_everything() -> None:
    spec = build()
    assert spec["ociVersion"] == "1.0.2-dev"
    assert namespaces(spec) == {
        "mount": None, "pid": None, "ipc": None, "uts": None, "network": str(NETNS),
    }
    assert spec["hostname"] == "pod-host"
    assert spec["linux"]["cgroupsPath"] == "/kubepods/pod1/infra"


@pytest.mark.parametrize("share_pid", [False, True])
def test_pod_and_container_pid_modes_both_get_a_new_pid_namespace(share_pid: bool) -> None:
    assert "pid" in namespaces(build(share_pid=share_pid))


def test_host_pid_keeps_the_host_pid_namespace() -> None:
    ns = namespaces(build(host_pid=True))
    assert "pid" not in ns
    assert {"mount", "ipc", "uts", "network"} <= ns.keys()


def test_share_pid_on_the_host_pid_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="host_pid"):
        build(host_pid=True, share_pid=True)


def test_host_ipc_drops_ipc_namespace_and_mqueue_and_binds_host_shm() -> None:
    spec = build(host_ipc=True, shm_path=Path("/run/pods/p/shm"))
    assert "ipc" not in namespaces(spec)
    m = mounts(spec)
    assert "/dev/mqueue" not in m
    assert m["/dev/shm"]["source"] == "/dev/shm"
    assert "rbind" in m["/dev/shm"]["options"]


def test_pod_shm_is_bind_mounted() -> None:
    m = mounts(build(shm_path=Path("/run/pods/p/shm")))
    shm = m["/dev/shm"]
    assert shm["source"] == "/run/pods/p/shm"
    assert shm["type"] == "bind"
    assert set(shm["options"]) == {"rbind", "rw", "nosuid", "nodev", "noexec"}
    assert m["/dev/mqueue"]["type"] == "mqueue"


def test_without_pod_shm_a_private_tmpfs() -> None:
    shm = mounts(build(shm_path=None))["/dev/shm"]
    assert shm["type"] == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= set(shm["options"])


def test_host_network_defaults_to_host_uts_and_no_hostname() -> None:
    spec = build(netns_path=None)
    ns = namespaces(spec)
    assert "network" not in ns
    assert "uts" not in ns
    assert "hostname" not in spec  # runc refuses a hostname without a private UTS namespace


def test_host_network_with_private_uts_sets_hostname() -> None:
    spec = build(netns_path=None, host_uts=False)
    assert "uts" in namespaces(spec)
    assert spec["hostname"] == "pod-host"


def test_all_host_namespaces_leave_only_mount() -> None:
    spec = build(netns_path=None, host_ipc=True, host_pid=True)
    assert namespaces(spec) == {"mount": None}


def test_process_is_unprivileged_pause() -> None:
    process = build()["process"]
    assert process["args"] == ["/pause", "-P"]
    assert process["user"] == {"uid": 65535, "gid": 65535}
    assert process["capabilities"] == {
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": [],
    }
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    assert process["cwd"] == "/"
    assert [e.split("=", 1)[0] for e in process["env"]] == ["PATH"]


def test_oom_score_adj_only_when_given() -> None:
    assert "oomScoreAdj" not in build()["process"]
    assert build(oom_score_adj=-998)["process"]["oomScoreAdj"] == -998


def test_readonly_empty_rootfs_and_pause_bind() -> None:
    spec = build(pause_binary=Path("/opt/bin/catatonit"))
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    pause = mounts(spec)["/pause"]
    assert pause["source"] == "/opt/bin/catatonit"
    assert {"rbind", "ro"} <= set(pause["options"])


def test_standard_mounts() -> None:
    m = mounts(build())
    assert m["/proc"]["type"] == "proc"
    assert m["/dev"]["type"] == "tmpfs"
    assert {"nosuid", "strictatime", "mode=755", "size=65536k"} <= set(m["/dev"]["options"])
    assert m["/dev/pts"]["type"] == "devpts"
    assert m["/sys"]["type"] == "sysfs"
    assert {"ro", "nosuid", "noexec", "nodev"} <= set(m["/sys"]["options"])
    # /dev must be mounted before what lives under it.
    order = [x["destination"] for x in build()["mounts"]]
    assert order.index("/dev") < order.index("/dev/pts") < order.index("/dev/shm")


def test_masked_and_readonly_paths() -> None:
    linux = build()["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/sys" in linux["readonlyPaths"]


def test_sysctls_annotations_passed_through_as_copies() -> None:
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}
    annotations = {"io.kubernetes.cri.sandbox-id": "abc"}
    spec = build(sysctls=sysctls, annotations=annotations)
    assert spec["linux"]["sysctl"] == sysctls
    assert spec["annotations"] == annotations
    spec["linux"]["sysctl"]["x"] = "y"
    assert "x" not in sysctls


def test_devices_deny_all_then_allow_basic_char_devices() -> None:
    devices = build()["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    allowed = {(d["major"], d.get("minor")) for d in devices[1:]}
    assert all(d["allow"] and d["type"] == "c" for d in devices[1:])
    # null, zero, full, random, urandom, tty, console, ptmx, pts/*
    assert allowed == {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, None)}


def test_memory_swappiness_zero_and_optional_limit() -> None:
    assert build()["linux"]["resources"]["memory"] == {"swappiness": 0}
    memory = build(memory_limit=64 << 20)["linux"]["resources"]["memory"]
    assert memory == {"swappiness": 0, "limit": 64 << 20}


def test_spec_is_json_serialisable() -> None:
    spec = build(sysctls={"kernel.msgmax": "8192"}, annotations={"a": "b"})
    assert json.loads(json.dumps(spec)) == spec


def test_write_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundles" / "c1"
    spec = build()
    write_bundle(bundle, spec)
    config = bundle / "config.json"
    assert json.loads(config.read_text()) == spec
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    rootfs = bundle / "rootfs"
    assert rootfs.is_dir()
    assert stat.S_IMODE(rootfs.stat().st_mode) == 0o755
    assert list(rootfs.iterdir()) == []
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]


def test_write_bundle_replaces_config(tmp_path: Path) -> None:
    write_bundle(tmp_path / "b", build(hostname="one"))
    write_bundle(tmp_path / "b", build(hostname="two"))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["hostname"] == "two"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "rootfs"]


def test_write_bundle_leaves_an_absolute_root_alone(tmp_path: Path) -> None:
    spec = build()
    spec["root"] = {"path": str(tmp_path / "elsewhere"), "readonly": False}
    write_bundle(tmp_path / "b", spec)
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json"]


def test_privileged_infra_mounts_sysfs_writable() -> None:
    """sysfs has one superblock per netns: a read-only infra mount would make /sys read-only for
    the pod's privileged containers too."""
    def sys_opts(spec: dict[str, object]) -> list[str]:
        mounts = spec["mounts"]
        assert isinstance(mounts, list)
        return next(m["options"] for m in mounts if m["destination"] == "/sys")

    kw = dict(hostname="h", netns_path=None, host_ipc=False, host_pid=False, share_pid=False,
              cgroups_path="/p/c")
    assert "ro" in sys_opts(infra_spec(**kw))  # type: ignore[arg-type]
    assert "ro" not in sys_opts(infra_spec(**kw, privileged=True))  # type: ignore[arg-type]
