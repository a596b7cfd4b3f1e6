"""Plugins' CreateContainer adjustments applied to an OCI spec, one plugin after another, and
the updates they ask for: what runc would be given, and the conflicts that fail the call."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cri.nri import adjust, resources, views
from cri.nri.adjust import AdjustmentError
from cri.nri.api import api_pb2 as nri
from cri.nri.owners import Conflict, Owners
from cri.nri.updates import Updates
from sandbox.oom import clamp_oom_score_adj

BASE: dict[str, Any] = {
    "process": {"args": ["/bin/sh"], "env": ["PATH=/bin", "HOME=/root"], "oomScoreAdj": 0,
                "user": {"uid": 0, "gid": 0}},
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": []},
               {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}],
    "annotations": {"io.kubernetes.cri.container-name": "app", "team": "a"},
    "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}],
                            "memory": {"limit": 1 << 30}},
              "devices": [], "cgroupsPath": "/pods/ctr"},
}


def no_check(res: dict[str, Any]) -> None:
    pass


def apply_all(*replies: tuple[str, nri.ContainerAdjustment],
              check: adjust.ResourceCheck = no_check) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    owners = Owners()
    for plugin, adj in replies:
        adjust.apply(spec, adj, plugin=plugin, ctr_id="c1", owners=owners, check=check)
    return spec


def test_env_annotations_args_and_mounts_are_set_replaced_and_removed() -> None:
    adj = nri.ContainerAdjustment(
        annotations={"injected": "yes", "-team": ""},
        env=[nri.KeyValue(key="HOME", value="/home"), nri.KeyValue(key="NEW", value="1"),
             nri.KeyValue(key="-PATH")],
        args=["/bin/app", "--flag"],
        mounts=[nri.Mount(destination="/data", type="bind", source="/other",
                          options=["rbind", "ro"]),
                nri.Mount(destination="/data/sub", type="bind", source="/x",
                          options=["rbind", "rslave"]),
                nri.Mount(destination="-/proc")],
    )
    spec = apply_all(("10-a", adj))
    assert spec["process"]["env"] == ["HOME=/home", "NEW=1"]
    assert spec["process"]["args"] == ["/bin/app", "--flag"]
    assert spec["annotations"] == {"io.kubernetes.cri.container-name": "app", "injected": "yes"}
    assert [(m["destination"], m["source"], m["options"]) for m in spec["mounts"]] == [
        ("/data", "/other", ["rbind", "ro"]), ("/data/sub", "/x", ["rbind", "rslave"])]
    assert spec["linux"]["rootfsPropagation"] == "rslave"


def test_devices_rlimits_hooks_oom_score_and_resources() -> None:
    adj = nri.ContainerAdjustment(rlimits=[nri.POSIXRlimit(type="RLIMIT_NOFILE", hard=10,
                                                           soft=5)])
    adj.hooks.prestart.add(path="/usr/bin/hook", args=["hook", "x"])
    adj.hooks.poststop.add(path="/usr/bin/cleanup").timeout.value = 5
    dev = adj.linux.devices.add(path="/dev/fuse", type="c", major=10, minor=229)
    dev.file_mode.value = 0o666
    adj.linux.oom_score_adj.value = 500
    res = adj.linux.resources
    res.cpu.shares.value = 512
    res.cpu.cpus = "0-1"
    res.memory.limit.value = 1 << 20
    res.hugepage_limits.add(page_size="2MB", limit=1 << 21)
    res.unified["memory.high"] = "max"
    res.pids.limit = 100
    spec = apply_all(("10-a", adj))
    process, linux = spec["process"], spec["linux"]
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 5}]
    assert process["oomScoreAdj"] == clamp_oom_score_adj(500)  # what the daemon may grant
    assert spec["hooks"] == {"prestart": [{"path": "/usr/bin/hook", "args": ["hook", "x"],
                                           "env": []}],
                             "poststop": [{"path": "/usr/bin/cleanup", "args": [], "env": [],
                                           "timeout": 5}]}
    assert linux["devices"] == [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                 "fileMode": 0o666}]
    assert linux["resources"]["devices"][-1] == {"allow": True, "access": "rw", "type": "c",
                                                 "major": 10, "minor": 229}
    assert linux["resources"]["cpu"] == {"shares": 512, "cpus": "0-1"}
    assert linux["resources"]["memory"] == {"limit": 1 << 20}
    assert linux["resources"]["hugepageLimits"] == [{"pageSize": "2MB", "limit": 1 << 21}]
    assert linux["resources"]["unified"] == {"memory.high": "max"}
    assert linux["resources"]["pids"] == {"limit": 100}


def test_the_next_plugin_sees_what_earlier_ones_changed() -> None:
    spec = apply_all(("10-a", nri.ContainerAdjustment(env=[nri.KeyValue(key="A", value="1")])))
    seen = views.container(spec, views.ContainerInfo(id="c1", pod_id="p1", name="app",
                                                     state=nri.CONTAINER_UNKNOWN, labels={}))
    assert "A=1" in seen.env
    assert seen.linux.resources.memory.limit.value == 1 << 30
    assert [m.destination for m in seen.mounts] == ["/proc", "/data"]


@pytest.mark.parametrize("first,second,what", [
    (nri.ContainerAdjustment(annotations={"k": "1"}), nri.ContainerAdjustment(
        annotations={"k": "2"}), "annotation 'k'"),
    (nri.ContainerAdjustment(env=[nri.KeyValue(key="E", value="1")]),
     nri.ContainerAdjustment(env=[nri.KeyValue(key="E", value="2")]), "env 'E'"),
    (nri.ContainerAdjustment(mounts=[nri.Mount(destination="/m", source="/a")]),
     nri.ContainerAdjustment(mounts=[nri.Mount(destination="/m", source="/b")]), "mount '/m'"),
    (nri.ContainerAdjustment(args=["a"]), nri.ContainerAdjustment(args=["b"]), "args"),
])
def test_two_plugins_setting_the_same_field_is_an_error_naming_both(
        first: nri.ContainerAdjustment, second: nri.ContainerAdjustment, what: str) -> None:
    with pytest.raises(Conflict, match=f"plugins 10-a and 20-b both tried to set {what}"):
        apply_all(("10-a", first), ("20-b", second))


def test_a_conflict_on_resources_names_the_field() -> None:
    a, b = nri.ContainerAdjustment(), nri.ContainerAdjustment()
    a.linux.resources.memory.limit.value = 1
    b.linux.resources.memory.limit.value = 2
    with pytest.raises(Conflict, match="10-a and 20-b both tried to set memory limit"):
        apply_all(("10-a", a), ("20-b", b))


def test_removing_what_another_plugin_set_takes_it_over() -> None:
    spec = apply_all(("10-a", nri.ContainerAdjustment(annotations={"k": "1"})),
                     ("20-b", nri.ContainerAdjustment(annotations={"-k": ""})),
                     ("30-c", nri.ContainerAdjustment(annotations={"k": "3"})))
    assert spec["annotations"]["k"] == "3"
    # args: a leading "" replaces what an earlier plugin set
    spec = apply_all(("10-a", nri.ContainerAdjustment(args=["a"])),
                     ("20-b", nri.ContainerAdjustment(args=["", "b"])))
    assert spec["process"]["args"] == ["b"]


@pytest.mark.parametrize("adj,what", [
    (nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(cgroups_path="/x")),
     "cgroups path"),
    (nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(sysctl={"net.x": "1"})),
     "sysctl"),
    (nri.ContainerAdjustment(CDI_devices=[nri.CDIDevice(name="vendor.com/gpu=0")]),
     "CDI devices"),
    (nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(
        seccomp_policy=nri.LinuxSeccomp(default_action="SCMP_ACT_ALLOW"))), "seccomp policy"),
])
def test_adjustments_pycri_cannot_apply_are_refused(adj: nri.ContainerAdjustment,
                                                    what: str) -> None:
    with pytest.raises(AdjustmentError, match=f"10-a asked to adjust {what}"):
        apply_all(("10-a", adj))


def test_resources_the_cgroup_cannot_take_are_refused() -> None:
    adj = nri.ContainerAdjustment()
    adj.linux.resources.cpu.cpus = "0"

    def no_cpuset(res: dict[str, Any]) -> None:
        if res.get("cpu", {}).get("cpus"):
            raise ValueError("cpusets: no cpuset controller")

    with pytest.raises(AdjustmentError, match="10-a: cpusets: no cpuset controller"):
        apply_all(("10-a", adj), check=no_cpuset)
    adj = nri.ContainerAdjustment()
    adj.linux.resources.blockio_class.value = "slow"
    with pytest.raises(AdjustmentError, match="block I/O classes are not configured"):
        apply_all(("10-a", adj))


@pytest.mark.parametrize("adj", [
    nri.ContainerAdjustment(env=[nri.KeyValue(key="A=B", value="1")]),
    nri.ContainerAdjustment(mounts=[nri.Mount(destination="rel", source="/a")]),
    nri.ContainerAdjustment(hooks=nri.Hooks(prestart=[nri.Hook(path="hook")])),
    nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(
        devices=[nri.LinuxDevice(path="/etc/passwd", type="c")])),
])
def test_malformed_adjustments_are_refused(adj: nri.ContainerAdjustment) -> None:
    with pytest.raises(AdjustmentError, match="10-a"):
        apply_all(("10-a", adj))


def test_updates_merge_per_container_and_conflict_across_plugins() -> None:
    updates = Updates(creating="new")
    a = nri.ContainerUpdate(container_id="c1", ignore_failure=True)
    a.linux.resources.cpu.shares.value = 100
    b = nri.ContainerUpdate(container_id="c1")
    b.linux.resources.memory.limit.value = 1 << 20
    updates.add("10-a", [a])
    updates.add("20-b", [b], [nri.ContainerEviction(container_id="c2")])
    [merged] = updates.updates
    assert (merged.linux.resources.cpu.shares.value, merged.linux.resources.memory.limit.value,
            merged.ignore_failure) == (100, 1 << 20, False)
    assert [e.container_id for e in updates.evictions] == ["c2"]
    c = nri.ContainerUpdate(container_id="c1")
    c.linux.resources.cpu.shares.value = 200
    with pytest.raises(Conflict, match="10-a and 30-c both tried to set cpu shares"):
        updates.add("30-c", [c])
    with pytest.raises(Conflict, match="while it is being created"):
        updates.add("10-a", [nri.ContainerUpdate(container_id="new")])


def test_oci_resources_round_trip_through_nri() -> None:
    oci = {"memory": {"limit": 100, "swap": 100, "swappiness": 0},
           "cpu": {"shares": 2, "quota": 50000, "period": 100000, "cpus": "1", "mems": "0"},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
           "unified": {"memory.high": "10"}, "pids": {"limit": 5},
           "devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}
    shown = resources.from_oci(oci)
    rebuilt: dict[str, Any] = {}
    shown_no_devices = nri.LinuxResources()
    shown_no_devices.CopyFrom(shown)
    del shown_no_devices.devices[:]
    resources.merge(rebuilt, shown_no_devices)
    assert rebuilt == {k: v for k, v in oci.items() if k != "devices"}
    assert (shown.devices[0].major.value, shown.devices[0].access) == (1, "rwm")
