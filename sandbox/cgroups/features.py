"""What a container's cgroup can be given on this host, beyond the memory and cpu every pod needs.

runc fails a whole create on one setting it cannot write: "cannot set hugetlb limit: container
could not join or create cgroup" where no v1 hierarchy carries hugetlb, "unified resource
"rdma.max" can't be set" where v2 lacks rdma. The kubelet sends some settings unasked (a zero
hugetlb limit for every page size under /sys/kernel/mm/hugepages), so the daemon learns once at
start-up what container cgroups can get (``detect``), says what they cannot (``missing``), and the
spec builders leave that out. On v2 a pod's own cgroup may offer less than the host (``for_pod``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.cgroups import child_controllers
from sandbox.cgroups._fs import DEFAULT_ROOT, KERNEL, CgroupFs
from sandbox.cgroups.layout import V1Layout, cached_detect

# Controllers of settings a spec carries only when asked, and that hosts may lack: cpuset (CRI
# cpuset_cpus/mems), hugetlb (hugepage limits), pids (pycri's pids_limit), rdma and misc (unified
# keys only), plus blkio (v1) or io (v2).
OPTIONAL = ("cpuset", "hugetlb", "misc", "pids", "rdma")

# Control files that only some kernels give a cgroup, by what they offer: a weight needs CFQ or
# BFQ on v1, the iocost or BFQ policy on v2; a swap limit needs swap accounting.
_V1_FILES = {"blkio weight": ("blkio.weight", "blkio.bfq.weight"),
             "swap limit": ("memory.memsw.limit_in_bytes",)}
_V2_FILES = {"io weight": ("io.weight", "io.bfq.weight"),
             "swap limit": ("memory.swap.max",)}

# systemd turns the controllers it manages (cpu, cpuset, io, memory, pids) off in a slice's
# subtree_control when no unit below asks for them, and runc turns every controller the root has
# on again along the path at each create, so what a pod's cgroup enables at a given moment says
# nothing about those. The ones systemd does not know it leaves as the pod's first runc create
# (its infra container) could enable them: that is what a container of the pod will get.
_UNMANAGED = ("hugetlb", "misc", "rdma")


@dataclass(frozen=True)
class Features:
    v2: bool
    controllers: frozenset[str]  # the controllers a container's cgroup gets
    files: frozenset[str]  # the optional control files (_V1_FILES, _V2_FILES) it has

    def has(self, controller: str) -> bool:
        return controller in self.controllers

    @property
    def swap(self) -> bool:
        """Whether a swap limit can be set (and so swap turned off per container)."""
        return not self.files.isdisjoint(_optional_files(self.v2)["swap limit"])

    def missing(self) -> list[str]:
        """What container cgroups cannot get, as the start-up line names it; [] when nothing."""
        io = "io" if self.v2 else "blkio"
        out = [c for c in sorted((*OPTIONAL, io)) if c not in self.controllers]
        for name, files in _optional_files(self.v2).items():
            if _controller(files[0]) in self.controllers and self.files.isdisjoint(files):
                out.append(f"{name} ({' or '.join(files)})")
        return out

    def unified_refusal(self, key: str) -> str | None:
        """Why the unified (cgroup v2) ``key`` cannot be written in a container's cgroup, or
        None when it can."""
        controller = _controller(key)
        if controller != "cgroup" and controller not in self.controllers:
            return f"the {controller} controller does not reach container cgroups on this host"
        # All memory.swap.* files come with swap accounting; memory.swap.max stands for them.
        probe = "memory.swap.max" if key.startswith("memory.swap.") else key
        known = {f for files in _optional_files(self.v2).values() for f in files}
        if probe in known and probe not in self.files:
            return f"container cgroups on this host have no {probe}"
        return None


def detect(*, root: Path = DEFAULT_ROOT, fs: CgroupFs = KERNEL) -> Features:
    """What container cgroups get on this host: on v1 the controllers of the mounted
    hierarchies, on v2 those the root offers (runc enables each along the path it creates).

    An optional file is looked for in a cgroup that has its controller: on v1 the hierarchy's
    root or a child of it (the kernel gives every non-root cgroup of a hierarchy the same
    files), on v2 a child of the root. iocost's root-only io.cost.qos also tells io.weight."""
    layout = cached_detect(root)
    if isinstance(layout, V1Layout):
        v2 = False
        controllers = frozenset(c for h in layout.hierarchies for c in h.controllers)

        def places(controller: str) -> Iterator[Path]:
            top = layout.dir_of(controller)
            if top is not None:
                yield top
                yield from _children(top)
    else:
        v2 = True
        controllers = layout.controllers

        def places(controller: str) -> Iterator[Path]:
            for d in _children(layout.root):
                if controller in _words(fs, d / "cgroup.controllers"):
                    yield d

    files = {f for group in _optional_files(v2).values() for f in group
             if _controller(f) in controllers
             and any((d / f).exists() for d in places(_controller(f)))}
    if v2 and "io" in controllers and (layout.root / "io.cost.qos").exists():
        files.add("io.weight")
    return Features(v2=v2, controllers=controllers, files=frozenset(files))


def for_pod(host: Features, pod_cgroup: str, *, root: Path = DEFAULT_ROOT,
            fs: CgroupFs = KERNEL) -> Features:
    """What the containers of pod cgroup ``pod_cgroup`` get: on v2 the host's, less the
    controllers systemd does not manage that the pod's cgroup does not enable for its children
    (a kubelet's parent or a slice whose subtree could not take them). On v1 a hierarchy reaches
    every cgroup in it: the host's."""
    if not host.v2:
        return host
    delegated = child_controllers(pod_cgroup, root=root, fs=fs)
    lost = {c for c in _UNMANAGED if c in host.controllers and c not in delegated}
    return replace(host, controllers=host.controllers - lost) if lost else host


def _optional_files(v2: bool) -> dict[str, tuple[str, ...]]:
    return _V2_FILES if v2 else _V1_FILES


def _controller(name: str) -> str:
    return name.split(".", 1)[0]


def _children(top: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _words(fs: CgroupFs, path: Path) -> list[str]:
    try:
        return fs.read(path).split()
    except FileNotFoundError:
        return []
