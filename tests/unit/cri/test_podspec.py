from __future__ import annotations

import pytest

from cri.api import api_pb2
from cri.config import PycriConfig
from cri.errors import InvalidArgument, Unimplemented
from cri.runtime.daemon import make_driver
from cri.runtime.podspec import PodPlan
from cri.runtime.podspec import plan as _plan


def plan(conf: PycriConfig, c: api_pb2.PodSandboxConfig) -> PodPlan:
    return _plan(conf, make_driver(conf), c)


def systemd() -> PycriConfig:
    conf = PycriConfig()
    conf.runtime.cgroup_driver = "systemd"
    return conf


def cfg(**kw: object) -> api_pb2.PodSandboxConfig:
    c = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", namespace="default", uid="u1"))
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_defaults() -> None:
    p = plan(PycriConfig(), cfg())
    assert p.cgroup_parent == "/pycri/podu1"
    assert (p.host_network, p.host_ipc, p.host_pid, p.share_pid) == (False, False, False, True)
    assert p.hostname == "web" and p.memory_limit is None


def test_kubelet_cgroup_parent_memory_limit_and_overhead() -> None:
    c = cfg()
    c.linux.cgroup_parent = "/kubepods/burstable/podu1"
    c.linux.resources.memory_limit_in_bytes = 100 << 20
    c.linux.overhead.memory_limit_in_bytes = 10 << 20
    p = plan(PycriConfig(), c)
    assert p.cgroup_parent == "/kubepods/burstable/podu1"
    assert p.memory_limit == 110 << 20


def test_systemd_driver_pods_are_slices() -> None:
    c = cfg()
    c.metadata.uid = "6f1c-42"
    # Dashes nest slices: the kubelet writes a uid's as underscores, and so does pycri.
    assert plan(systemd(), c).cgroup_parent == "pycri-pod6f1c_42.slice"
    c.linux.cgroup_parent = "kubepods-besteffort-pod6f1c_42.slice"
    assert plan(systemd(), c).cgroup_parent == "kubepods-besteffort-pod6f1c_42.slice"


@pytest.mark.parametrize(("parent", "name"), [
    # The kubelet's slice of this very pod (its uid) is the pod's cgroup, by name or by path.
    ("kubepods-besteffort-podu1.slice", "kubepods-besteffort-podu1.slice"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice",
     "kubepods-besteffort-podu1.slice"),
    # Any other slice is a parent shared by a client's pods (critest sends "/test.slice"):
    # each pod gets its own below it.
    ("/test.slice", "test-podu1.slice"),
    ("kubepods-besteffort-podother.slice", "kubepods-besteffort-podother-podu1.slice"),
])
def test_a_slice_given_by_its_path_is_known_by_its_name(parent: str, name: str) -> None:
    c = cfg()
    c.linux.cgroup_parent = parent
    assert plan(systemd(), c).cgroup_parent == name


@pytest.mark.parametrize(("driver", "parent", "message"), [
    ("systemd", "/kubepods/x-pod1.slice", "not a valid systemd slice name"),
    ("cgroupfs", "/test.slice", "is a systemd slice, but pycri runs the cgroupfs"),
    ("systemd", "/kubepods/burstable/podu1", "not a systemd slice, but pycri runs the systemd"),
    ("systemd", "kubepods--x.slice", "not a valid systemd slice name"),
    ("systemd", "-.slice", "not a valid systemd slice name"),
    ("systemd", "kubepods.slice:pycri:x", "not a systemd slice"),
    ("cgroupfs", "kubepods-besteffort.slice", "is a systemd slice, but pycri runs the cgroupfs"),
])
def test_a_cgroup_parent_of_the_other_driver_names_both(driver: str, parent: str,
                                                         message: str) -> None:
    conf = systemd() if driver == "systemd" else PycriConfig()
    c = cfg()
    c.linux.cgroup_parent = parent
    with pytest.raises(InvalidArgument, match=message):
        plan(conf, c)


def test_default_sysctls_merge_and_pod_wins() -> None:
    conf = PycriConfig()
    conf.runtime.default_sysctls = ["net.ipv4.ping_group_range=0 2147483647",
                                    "kernel.shm_rmid_forced=0"]
    c = cfg()
    c.linux.sysctls["kernel.shm_rmid_forced"] = "1"
    p = plan(conf, c)
    assert p.sysctls == {"net.ipv4.ping_group_range": "0 2147483647", "kernel.shm_rmid_forced": "1"}


@pytest.mark.parametrize("mutate", [
    lambda c: c.ClearField("metadata"),
    lambda c: setattr(c.metadata, "uid", ""),
    lambda c: setattr(c.metadata, "name", "a/b"),
    lambda c: setattr(c.metadata, "namespace", "x;K8S_POD_NAME=evil"),
    lambda c: setattr(c.linux, "cgroup_parent", "/kubepods/../../etc"),
    lambda c: setattr(c.linux, "cgroup_parent", "kubepods.slice"),
    lambda c: c.linux.sysctls.update({"kernel.core_pattern": "|/x"}),
    lambda c: setattr(c.linux.security_context.namespace_options, "pid",
                      api_pb2.NamespaceMode.TARGET),
    lambda c: setattr(c.linux.security_context.namespace_options.userns_options, "mode",
                      api_pb2.NamespaceMode.CONTAINER),
    lambda c: setattr(c.linux.security_context.namespace_options.userns_options, "mode",
                      api_pb2.NamespaceMode.TARGET),
])
def test_bad_input_is_invalid_argument(mutate: object) -> None:
    c = cfg()
    mutate(c)  # type: ignore[operator]
    with pytest.raises(InvalidArgument):
        plan(PycriConfig(), c)


def test_the_node_user_namespace_is_accepted_and_a_pod_one_refused() -> None:
    c = cfg()
    userns = c.linux.security_context.namespace_options.userns_options
    userns.mode = api_pb2.NamespaceMode.NODE  # what the kubelet sends for hostUsers: true
    assert plan(PycriConfig(), c).hostname == "web"
    userns.mode = api_pb2.NamespaceMode.POD  # hostUsers: false
    userns.uids.add(container_id=0, host_id=1000, length=65536)
    userns.gids.add(container_id=0, host_id=1000, length=65536)
    with pytest.raises(Unimplemented, match=r"user namespaces .* not supported"):
        plan(PycriConfig(), c)
