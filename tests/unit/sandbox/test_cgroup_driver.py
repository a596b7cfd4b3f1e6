"""The systemd driver's requests to systemd (a fake manager records them), and the naming
rules of both drivers. The D-Bus side runs for real in the node guest (hack/node)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox import cgroups
from sandbox.cgroups import Resources
from sandbox.cgroups.driver import CgroupfsDriver, SystemdDriver
from sandbox.cgroups.systemd import Property, UnitExists
from sandbox.errors import CgroupError
from tests.unit.sandbox.oci.cgroup_cleanup import remove_cgroup_tree


class FakeSystemd:
    def __init__(self, existing: set[str] | None = None) -> None:
        self.units: dict[str, dict[str, Any]] = {u: {} for u in existing or set()}
        self.calls: list[tuple[str, str]] = []
        self.connected = False

    async def connect(self) -> None:
        self.connected = True

    async def start_transient_unit(self, name: str, properties: list[Property]) -> None:
        self.calls.append(("start", name))
        if name in self.units:
            raise UnitExists(f"unit {name} exists")
        self.units[name] = {k: v for k, _, v in properties}

    async def set_unit_properties(self, name: str, properties: list[Property]) -> None:
        self.calls.append(("set", name))
        self.units[name].update({k: v for k, _, v in properties})

    async def stop_unit(self, name: str) -> None:
        self.calls.append(("stop", name))
        self.units.pop(name, None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_pod_slice_is_made_with_swap_off_and_its_limits_as_properties() -> None:
    fake = FakeSystemd()
    driver = SystemdDriver(fake, "pod")
    res = Resources(memory_limit=64 << 20, cpu_shares=512, cpu_quota=50_000, cpu_period=100_000)
    run(driver.create_pod("pycri-podu1.slice", res))
    props = fake.units["pycri-podu1.slice"]
    assert props["MemorySwapMax"] == 0 and props["MemoryMax"] == 64 << 20
    assert props["CPUWeight"] == 59  # 512 shares, on the curve the cgroupfs driver writes too
    assert (props["CPUQuotaPerSecUSec"], props["CPUQuotaPeriodUSec"]) == (500_000, 100_000)
    assert props["MemoryAccounting"] and props["TasksAccounting"]


def test_the_kubelets_slice_gets_swap_off_at_run_time_and_is_never_stopped_for_it() -> None:
    fake = FakeSystemd(existing={"kubepods-burstable-podu1.slice"})
    driver = SystemdDriver(fake, "pod")
    run(driver.create_pod("kubepods-burstable-podu1.slice", Resources()))
    assert fake.calls == [("start", "kubepods-burstable-podu1.slice"),
                          ("set", "kubepods-burstable-podu1.slice")]
    assert fake.units["kubepods-burstable-podu1.slice"]["MemorySwapMax"] == 0


def test_conmon_gets_a_scope_in_the_pod_or_in_the_configured_slice() -> None:
    fake = FakeSystemd()
    run(SystemdDriver(fake, "pod").place_monitor(4242, "abc", "pycri-podu1.slice"))
    scope = fake.units["pycri-conmon-abc.scope"]
    assert scope["PIDs"] == [4242] and scope["Slice"] == "pycri-podu1.slice"
    driver = SystemdDriver(fake, "system.slice")
    run(driver.start())
    run(driver.place_monitor(4343, "def", "pycri-podu1.slice"))
    assert fake.connected and fake.units["pycri-conmon-def.scope"]["Slice"] == "system.slice"


def test_a_leftover_conmon_scope_of_the_same_id_is_replaced() -> None:
    fake = FakeSystemd(existing={"pycri-conmon-abc.scope"})
    run(SystemdDriver(fake, "pod").place_monitor(7, "abc", "pycri-podu1.slice"))
    assert fake.units["pycri-conmon-abc.scope"]["PIDs"] == [7]
    assert ("stop", "pycri-conmon-abc.scope") in fake.calls


def test_a_bad_conmon_cgroup_is_refused_up_front() -> None:
    with pytest.raises(CgroupError):
        SystemdDriver(FakeSystemd(), "/pycri-conmon")


def test_container_cgroups_per_driver() -> None:
    assert SystemdDriver(FakeSystemd(), "pod").container_cgroup("kubepods-podu1.slice", "c1") == \
        "kubepods-podu1.slice:pycri:c1"
    assert CgroupfsDriver("/pycri-conmon").container_cgroup("/kubepods/podu1", "c1") == \
        "/kubepods/podu1/pycri-c1"
    with pytest.raises(CgroupError):
        SystemdDriver(FakeSystemd(), "pod").container_cgroup("kubepods-podu1.slice", "../x")


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup").is_dir(),
                    reason="needs root and a cgroup tree")
def test_a_conmon_cgroup_removed_after_start_is_made_again() -> None:
    # As systemd's daemon-reload does on a cgroup v1 kind node (blkio, which it does not use).
    name = f"/pycri-test-{secrets.token_hex(4)}-conmon"
    driver = CgroupfsDriver(name)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        run(driver.start())
        dirs = cgroups.pod_cgroup_dirs(name)
        os.rmdir(dirs[0])
        run(driver.place_monitor(proc.pid, "c1", "/kubepods/podu1"))
        for d in dirs:
            assert str(proc.pid) in (d / "cgroup.procs").read_text().split()
    finally:
        proc.kill()
        proc.wait()
        remove_cgroup_tree(name)
