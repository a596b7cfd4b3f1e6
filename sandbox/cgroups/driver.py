"""The two cgroup drivers, as the kubelet knows them: cgroupfs and systemd.

A driver decides how pod and container cgroups are named, made, limited and removed, and where
each conmon goes. Reading a cgroup (stats, OOM counters) needs no driver: ``parse_path`` finds
both kinds of name in the tree.

- cgroupfs: pycri writes the tree itself; pod cgroups are paths (``/kubepods/pod<uid>``) and
  runc makes each container's ``<pod>/pycri-<id>``.
- systemd: systemd owns the tree. Pods are slices (``kubepods-besteffort-pod<uid>.slice``, or
  ``pycri-pod<uid>.slice`` of pycri's own), containers are scopes that ``runc --systemd-cgroup``
  asks systemd for (``<slice>:pycri:<id>`` -> ``pycri-<id>.scope``), each conmon goes into a
  scope of its own, and limits are unit properties, which systemd keeps across daemon-reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from sandbox import cgroups
from sandbox.cgroups import units
from sandbox.cgroups._fs import parse_path
from sandbox.cgroups.resources import Resources, shares_to_weight
from sandbox.cgroups.systemd import Property, SystemdManager, UnitExists
from sandbox.errors import CgroupError

log = logging.getLogger(__name__)

CONTAINER_PREFIX = "pycri"
MONITOR_PREFIX = "pycri-conmon"


class CgroupDriver(Protocol):
    name: str  # as the kubelet's --cgroup-driver names it
    systemd_cgroup: bool  # runc's --systemd-cgroup

    def pod_cgroup(self, parent: str, uid: str) -> str:
        """The cgroup of a pod with ``uid`` whose parent is ``parent`` (checked)."""

    def normalize(self, parent: str) -> str:
        """A client's cgroup_parent in this driver's one form; CgroupError unless it is a
        cgroup this driver can manage."""

    def pod_cgroup_in(self, given: str, uid: str) -> str:
        """The cgroup of pod ``uid`` whose client sent cgroup_parent ``given`` (normalized):
        ``given`` itself, or one of the pod's own below it."""

    def container_cgroup(self, pod: str, ctr_id: str) -> str:
        """The OCI ``linux.cgroupsPath`` of a container of pod cgroup ``pod``."""

    async def start(self) -> None:
        """Start-up: make what the driver keeps for the daemon's life (the conmon cgroup)."""

    async def create_pod(self, path: str, res: Resources) -> None:
        """Make pod cgroup ``path`` with swap disabled and ``res`` applied; an existing one
        (the kubelet's) gets the same settings."""

    async def remove_pod(self, path: str) -> None:
        """Remove a pod cgroup that pycri made; CgroupError while processes are inside."""

    async def place_monitor(self, pid: int, ctr_id: str, pod: str) -> None:
        """Move a new conmon (before it starts anything) out of the daemon's cgroup."""


class CgroupfsDriver:
    name = "cgroupfs"
    systemd_cgroup = False

    def __init__(self, conmon_cgroup: str) -> None:
        """``conmon_cgroup``: the cgroupfs path all conmons share ("" keeps them in the
        daemon's cgroup)."""
        self.conmon_cgroup = conmon_cgroup

    def pod_cgroup(self, parent: str, uid: str) -> str:
        path = f"{parent.rstrip('/')}/pod{uid}"
        parse_path(path)  # checked here, as the systemd driver checks its slice names
        return path

    def normalize(self, parent: str) -> str:
        if units.is_unit_form(parent) or parent.rstrip("/").endswith(".slice"):
            raise CgroupError(f"{parent!r} is a systemd slice, but pycri runs the cgroupfs "
                              "driver (a cgroupfs path like /kubepods/pod<uid> fits it)")
        path = "/" + "/".join(p for p in parent.split("/") if p) if parent.startswith("/") \
            else parent
        parse_path(path)
        return path

    def pod_cgroup_in(self, given: str, uid: str) -> str:
        # The kubelet's cgroupfs manager makes the pod's own cgroup and sends it.
        return given

    def container_cgroup(self, pod: str, ctr_id: str) -> str:
        return cgroups.container_cgroup_path(pod, ctr_id, CONTAINER_PREFIX)

    async def start(self) -> None:
        if self.conmon_cgroup:
            # Made once and kept: conmons outlive the daemon in it. A leaf: on cgroup v2 a
            # cgroup that enables controllers for its children cannot take conmon's pid.
            await asyncio.to_thread(cgroups.create_leaf_cgroup, self.conmon_cgroup)

    async def create_pod(self, path: str, res: Resources) -> None:
        await asyncio.to_thread(cgroups.create_pod_cgroup, path, res.memory_limit,
                                cpu_shares=res.cpu_shares, cpu_quota=res.cpu_quota,
                                cpu_period=res.cpu_period)

    async def remove_pod(self, path: str) -> None:
        await asyncio.to_thread(cgroups.remove_pod_cgroup, path)

    async def place_monitor(self, pid: int, ctr_id: str, pod: str) -> None:
        if not self.conmon_cgroup:
            return
        try:
            cgroups.add_pid(self.conmon_cgroup, pid)
        except CgroupError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            # Made at start-up, but removed since by someone else: on a cgroup v1 kind node
            # systemd's daemon-reload (kubeadm's, before it starts the kubelet) removes it from
            # the blkio hierarchy, which systemd does not use there. Made again, once.
            await asyncio.to_thread(cgroups.create_leaf_cgroup, self.conmon_cgroup)
            cgroups.add_pid(self.conmon_cgroup, pid)


class SystemdDriver:
    name = "systemd"
    systemd_cgroup = True

    def __init__(self, manager: SystemdManager, conmon_cgroup: str) -> None:
        """``conmon_cgroup``: "pod" puts each conmon in a scope in its pod's slice (its memory
        counts to the pod, as CRI-O's "pod" does); a slice name puts the scopes there."""
        if conmon_cgroup != "pod":
            units.check_slice(conmon_cgroup)
        self.manager = manager
        self.conmon_cgroup = conmon_cgroup

    def pod_cgroup(self, parent: str, uid: str) -> str:
        return units.pod_slice(parent, uid)

    def normalize(self, parent: str) -> str:
        """A slice name, or the slice's path in the tree (critest sends "/test.slice"):
        the name is what systemd knows it by."""
        name = parent
        if parent.startswith("/"):
            parts = tuple(p for p in parent.split("/") if p)
            name = parts[-1] if parts else ""
            if not name.endswith(".slice") or parts != units.slice_components(name):
                name = parent
        if not name.endswith(".slice") or ":" in name:
            raise CgroupError(f"{parent!r} is not a systemd slice, but pycri runs the systemd "
                              "cgroup driver (a slice like kubepods-besteffort-pod<uid>.slice "
                              "fits it)")
        units.check_slice(name)
        return name

    def pod_cgroup_in(self, given: str, uid: str) -> str:
        # The kubelet sends each pod its own slice, named after the pod's uid
        # (kubepods-besteffort-pod<uid>.slice); any other slice is a parent a client shares
        # between its pods (critest's test.slice), and each pod gets a slice of its own below
        # it, swap off and all, which pycri can remove without touching the other pods.
        own = f"pod{uid.replace('-', '_')}.slice"
        if given == own or given.endswith(f"-{own}"):
            return given
        return units.pod_slice(given, uid)

    def container_cgroup(self, pod: str, ctr_id: str) -> str:
        units.scope_name(CONTAINER_PREFIX, ctr_id)
        return f"{pod}:{CONTAINER_PREFIX}:{ctr_id}"

    async def start(self) -> None:
        await self.manager.connect()
        if self.conmon_cgroup != "pod":
            await self._ensure_slice(self.conmon_cgroup, [])

    async def create_pod(self, path: str, res: Resources) -> None:
        await self._ensure_slice(path, _slice_properties(res))

    async def _ensure_slice(self, name: str, props: list[Property]) -> None:
        # Accounting on, so the pod's containers get every controller and stats have files.
        props = [("Description", "s", f"pycri {name}"), *_ACCOUNTING, *props]
        try:
            await self.manager.start_transient_unit(name, props)
        except UnitExists:
            # The kubelet's slice, or ours from before a restart: same settings, at run time.
            await self.manager.set_unit_properties(name, props[1:])

    async def remove_pod(self, path: str) -> None:
        # Stopping a slice kills whatever is left in it; pycri removes only an empty pod.
        pids = await asyncio.to_thread(cgroups.list_pids, path)
        if pids:
            raise CgroupError(f"cgroup {path} still has processes: {pids[:20]}")
        await self.manager.stop_unit(path)

    async def place_monitor(self, pid: int, ctr_id: str, pod: str) -> None:
        parent = pod if self.conmon_cgroup == "pod" else self.conmon_cgroup
        scope = units.scope_name(MONITOR_PREFIX, ctr_id)
        props: list[Property] = [
            ("Description", "s", f"pycri conmon of {ctr_id}"),
            ("Slice", "s", parent),
            ("PIDs", "au", [pid]),
            # A scope whose conmon died abnormally would otherwise stay listed as failed.
            ("CollectMode", "s", "inactive-or-failed"),
            ("DefaultDependencies", "b", False),
        ]
        try:
            await self.manager.start_transient_unit(scope, props)
        except UnitExists:
            # A conmon of an earlier attempt with this id that is gone by now leaves its
            # scope only while systemd tears it down; stop it and try once more.
            with contextlib.suppress(CgroupError):
                await self.manager.stop_unit(scope)
            await self.manager.start_transient_unit(scope, props)


_ACCOUNTING: list[Property] = [
    ("MemoryAccounting", "b", True),
    ("CPUAccounting", "b", True),
    ("IOAccounting", "b", True),
    ("TasksAccounting", "b", True),
]


def _slice_properties(res: Resources) -> list[Property]:
    """Swap off (MemorySwapMax=0: swap.max is hierarchical, so no container of the pod swaps)
    and the pod's limits, as systemd.resource-control(5) names them."""
    props: list[Property] = [("MemorySwapMax", "t", 0)]
    if res.memory_limit is not None:
        props.append(("MemoryMax", "t", res.memory_limit))
    if res.cpu_shares is not None:
        props.append(("CPUWeight", "t", shares_to_weight(res.cpu_shares)))
    if res.cpu_quota is not None and res.cpu_quota > 0:
        period = res.cpu_period or 100_000
        # systemd takes the quota scaled to one second, and the period beside it.
        props.append(("CPUQuotaPerSecUSec", "t", res.cpu_quota * 1_000_000 // period))
        props.append(("CPUQuotaPeriodUSec", "t", period))
    elif res.cpu_quota == -1:
        props.append(("CPUQuotaPerSecUSec", "t", 2**64 - 1))  # USEC_INFINITY: no quota
    return props
