"""What container cgroups can get, read from fake v1 and v2 trees (tests/unit/sandbox/conftest.py):
each optional controller and file present and absent, as the start-up line names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import features
from sandbox.cgroups.features import Features

POD = "/kubepods/burstable/pod1234"


def add_hierarchy(root: Path, name: str) -> None:
    """A v1 hierarchy for ``name`` (made before the tree is first read: layouts are cached)."""
    (root / name).mkdir()
    (root / name / "cgroup.procs").write_text("")


def make_child(fake: Any, name: str, enable: str) -> Path:
    """A child of the v2 root with the controllers ``enable`` lists delegated to it."""
    fake.write(fake.root / "cgroup.subtree_control", " ".join(f"+{c}" for c in enable.split()))
    child: Path = fake.root / name
    fake.mkdir(child)
    return child


# --- v1 (the cgroup2 mount of a hybrid host carries no controller pycri's runc uses) -----------

def test_v1_hybrid_host_without_hugetlb_rdma_misc_hierarchies(cgroup_v1: Any) -> None:
    """This machine: hugetlb only on the hybrid cgroup2 mount, where runc sets no limits."""
    fake = cgroup_v1()
    found = features.detect(root=fake.root, fs=fake)
    assert not found.v2
    for c in ("hugetlb", "rdma", "misc"):
        assert not found.has(c)
    assert found.has("cpuset") and found.has("pids") and found.has("blkio")
    assert found.swap
    assert found.missing() == ["hugetlb", "misc", "rdma"]


@pytest.mark.parametrize("controller", ["hugetlb", "rdma", "misc"])
def test_v1_a_mounted_hierarchy_reaches_containers(cgroup_v1: Any, controller: str) -> None:
    fake = cgroup_v1()
    add_hierarchy(fake.root, controller)
    found = features.detect(root=fake.root, fs=fake)
    assert found.has(controller)
    assert controller not in found.missing()


def test_v1_all_optional_hierarchies_mounted_leave_nothing_to_say(cgroup_v1: Any) -> None:
    fake = cgroup_v1(hybrid=False)
    for name in ("hugetlb", "rdma", "misc"):
        add_hierarchy(fake.root, name)
    assert features.detect(root=fake.root, fs=fake).missing() == []


def test_v1_missing_cpuset_and_pids_hierarchies_are_named(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    for name in ("cpu,cpuacct", "memory", "devices", "blkio"):
        add_hierarchy(root, name)
    (root / "blkio" / "blkio.weight").write_text("500\n")
    (root / "memory" / "memory.memsw.limit_in_bytes").write_text("0\n")
    found = features.detect(root=root)
    assert found.missing() == ["cpuset", "hugetlb", "misc", "pids", "rdma"]


def test_v1_blkio_weight_needs_cfq_or_bfq(cgroup_v1: Any) -> None:
    """blkio.weight (CFQ) is on the hierarchy root too; blkio.bfq.weight only below it."""
    fake = cgroup_v1()
    blkio = fake.root / "blkio"
    (blkio / "blkio.weight").unlink()
    assert features.detect(root=fake.root, fs=fake).missing() == [
        "hugetlb", "misc", "rdma", "blkio weight (blkio.weight or blkio.bfq.weight)"]
    (blkio / "system.slice").mkdir()
    (blkio / "system.slice" / "blkio.bfq.weight").write_text("100\n")
    found = features.detect(root=fake.root, fs=fake)
    assert "blkio.bfq.weight" in found.files
    assert found.missing() == ["hugetlb", "misc", "rdma"]


def test_v1_without_swap_accounting(cgroup_v1: Any) -> None:
    fake = cgroup_v1(swap=False)
    found = features.detect(root=fake.root, fs=fake)
    assert not found.swap
    assert found.missing()[-1] == "swap limit (memory.memsw.limit_in_bytes)"


def test_v1_pods_get_what_the_host_has(cgroup_v1: Any) -> None:
    """A v1 hierarchy reaches every cgroup in it: no per-pod reading."""
    fake = cgroup_v1()
    host = features.detect(root=fake.root, fs=fake)
    assert features.for_pod(host, "/nowhere/pod1", root=fake.root, fs=fake) is host


# --- v2 ---------------------------------------------------------------------------------------

def test_v2_root_controllers_are_what_containers_get(cgroup_v2: Any) -> None:
    """The node guest: everything but rdma and misc offered by the default fake root."""
    fake = cgroup_v2()
    make_child(fake, "system.slice", "io memory")
    (fake.root / "system.slice" / "io.weight").write_text("default 100\n")
    found = features.detect(root=fake.root, fs=fake)
    assert found.v2
    assert found.has("hugetlb") and found.has("io") and found.has("cpuset")
    assert found.files == {"io.weight", "memory.swap.max"}
    assert found.missing() == ["misc", "rdma"]


@pytest.mark.parametrize("controller", ["hugetlb", "rdma", "misc", "io", "pids", "cpuset"])
def test_v2_each_optional_controller_as_the_root_offers_it(cgroup_v2: Any,
                                                           controller: str) -> None:
    every = "cpuset cpu io memory hugetlb pids rdma misc"
    fake = cgroup_v2(controllers=" ".join(c for c in every.split() if c != controller))
    found = features.detect(root=fake.root, fs=fake)
    assert not found.has(controller)
    assert controller in found.missing()


def test_v2_io_weight_from_iocost_or_bfq(cgroup_v2: Any) -> None:
    fake = cgroup_v2(controllers="cpu io memory")
    child = make_child(fake, "system.slice", "io memory")
    found = features.detect(root=fake.root, fs=fake)
    assert found.has("io") and "io.weight" not in found.files
    assert "io weight (io.weight or io.bfq.weight)" in found.missing()
    assert found.unified_refusal("io.weight") == "container cgroups on this host have no io.weight"
    assert found.unified_refusal("io.max") is None
    (child / "io.bfq.weight").write_text("default 100\n")
    found = features.detect(root=fake.root, fs=fake)
    assert found.files >= {"io.bfq.weight"} and "io.weight" not in found.files
    assert found.unified_refusal("io.bfq.weight") is None
    assert found.unified_refusal("io.weight") is not None
    # iocost's root-only knob: every cgroup with io has io.weight then.
    (fake.root / "io.cost.qos").write_text("")
    assert "io.weight" in features.detect(root=fake.root, fs=fake).files


def test_v2_io_weight_is_not_looked_for_where_io_is_not_delegated(cgroup_v2: Any) -> None:
    fake = cgroup_v2(controllers="cpu io memory")
    child = make_child(fake, "init.scope", "memory")
    (child / "io.weight").write_text("stale\n")  # not the kernel's: io is not enabled there
    assert "io.weight" not in features.detect(root=fake.root, fs=fake).files


def test_v2_without_swap_accounting(cgroup_v2: Any) -> None:
    fake = cgroup_v2(swap=False, controllers="cpu io memory pids cpuset hugetlb rdma misc")
    make_child(fake, "system.slice", "memory")
    (fake.root / "io.cost.qos").write_text("")
    found = features.detect(root=fake.root, fs=fake)
    assert not found.swap
    assert found.missing() == ["swap limit (memory.swap.max)"]
    for key in ("memory.swap.max", "memory.swap.high"):
        assert found.unified_refusal(key) == "container cgroups on this host have no memory.swap.max"
    assert found.unified_refusal("memory.high") is None


def test_v2_unified_keys_need_their_controller(cgroup_v2: Any) -> None:
    found = features.detect(root=cgroup_v2().root)
    assert found.unified_refusal("rdma.max") == (
        "the rdma controller does not reach container cgroups on this host")
    assert found.unified_refusal("misc.max") is not None
    assert found.unified_refusal("hugetlb.2MB.max") is None
    assert found.unified_refusal("cgroup.freeze") is None  # core files: every cgroup has them


def test_v2_a_pod_that_does_not_delegate_hugetlb_rdma_misc(cgroup_v2: Any) -> None:
    """systemd does not manage hugetlb, rdma and misc: what the pod's cgroup enables for its
    children is what its containers get. The cgroupfs driver delegates all the root has."""
    fake = cgroup_v2(controllers="cpuset cpu io memory hugetlb pids rdma misc")
    host = features.detect(root=fake.root, fs=fake)
    cgroups.create_pod_cgroup(POD, root=fake.root, fs=fake)
    assert features.for_pod(host, POD, root=fake.root, fs=fake) == host
    pod = fake.root / POD[1:]
    fake.write(pod / "cgroup.subtree_control", "-hugetlb -rdma -cpuset -io")
    narrowed = features.for_pod(host, POD, root=fake.root, fs=fake)
    assert not narrowed.has("hugetlb") and not narrowed.has("rdma")
    assert narrowed.has("misc")
    # systemd turns cpuset and io off in a slice no unit asks them of, and runc turns them on
    # again at each create: the pod's subtree_control says nothing about those.
    assert narrowed.has("cpuset") and narrowed.has("io")
    gone = features.for_pod(host, "/kubepods/gone", root=fake.root, fs=fake)
    assert gone.controllers == host.controllers - {"hugetlb", "rdma", "misc"}


def test_missing_names_controllers_before_files() -> None:
    bare = Features(v2=True, controllers=frozenset({"cpu", "memory", "io"}), files=frozenset())
    assert bare.missing() == ["cpuset", "hugetlb", "misc", "pids", "rdma",
                              "io weight (io.weight or io.bfq.weight)",
                              "swap limit (memory.swap.max)"]
