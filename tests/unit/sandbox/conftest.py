"""A fake cgroupfs kernel for the cgroup driver tests.

Real cgroupfs fills a new directory with control files, lets rmdir take a directory that lists
them, and gives some files semantics (subtree_control, memsw >= limit, and v2's rule that a
cgroup other than the root holds either processes or controllers for its children, never
both). ``FakeKernel`` plays that part over a tmp_path tree and records every write so tests can
check values and order.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.cgroups import KernelFs

UNLIMITED = "9223372036854771712"

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": UNLIMITED, "memory.swappiness": "60"},
    "pids": {"pids.max": "max"},
    "devices": {"devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.weight": "100"},
}
V2_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "io": {"io.max": ""},
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.current": "0"},
    "pids": {"pids.max": "max"},
}


def _words(path: Path) -> list[str]:
    return path.read_text().split()


def _fill(directory: Path, files: dict[str, str]) -> None:
    for name, value in files.items():
        (directory / name).write_text(value + "\n" if value else "")


class FakeKernel(KernelFs):
    def __init__(self, root: Path, version: int, *, swap: bool = True) -> None:
        self.root = root
        self.version = version
        self.swap = swap  # v1 memory.memsw.*, v2 memory.swap.*
        self.writes: list[tuple[str, str]] = []
        self.fail_on: dict[str, int] = {}  # file name -> errno for the next write to it

    # --- what mkdir makes -------------------------------------------------------------
    def _v1_files(self, hierarchy: Path) -> dict[str, str]:
        files = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0"}
        if (hierarchy / "cgroup.controllers").exists():  # hybrid cgroup2 mount
            return {"cgroup.procs": "", "cgroup.controllers": "", "cgroup.subtree_control": ""}
        for controller in hierarchy.name.split(","):
            files.update(V1_FILES.get(controller, {}))
            if controller == "memory" and self.swap:
                files["memory.memsw.limit_in_bytes"] = UNLIMITED
        return files

    def _v2_files(self, parent: Path) -> dict[str, str]:
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        files = {
            "cgroup.procs": "",
            "cgroup.events": "populated 0",
            "cgroup.controllers": " ".join(enabled),
            "cgroup.subtree_control": "",
        }
        for controller in enabled:
            files.update(self._v2_controller_files(controller))
        return files

    def _v2_controller_files(self, controller: str) -> dict[str, str]:
        files = dict(V2_FILES.get(controller, {}))
        if controller == "memory" and not self.swap:
            files.pop("memory.swap.max")
        return files

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        if self.version == 2:
            _fill(path, self._v2_files(path.parent))
        else:
            hierarchy = self.root / path.relative_to(self.root).parts[0]
            _fill(path, self._v1_files(hierarchy))

    def rmdir(self, path: Path) -> None:
        if any(p.is_dir() for p in path.iterdir()):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        if (path / "cgroup.procs").read_text().split():
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        for p in path.iterdir():
            p.unlink()
        super().rmdir(path)

    # --- what writes mean ---------------------------------------------------------------
    def write(self, path: Path, value: str) -> None:
        self.writes.append((str(path.relative_to(self.root)), value))
        err = self.fail_on.pop(path.name, None)
        if err is not None:
            raise OSError(err, os.strerror(err), str(path))
        if path.name == "cgroup.subtree_control":
            self._subtree_control(path, value)
            return
        if path.name == "cgroup.procs":
            if self._v2_inner(path.parent) and _words(path.parent / "cgroup.subtree_control"):
                # v2 "no internal processes": a cgroup that delegates controllers takes no pid.
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
            procs = path.read_text().split()
            path.write_text("\n".join([*procs, value]) + "\n")
            return
        if path.name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            self._check_memsw(path, int(value))
        super().write(path, value)

    def _check_memsw(self, path: Path, value: int) -> None:
        memsw = path.parent / "memory.memsw.limit_in_bytes"
        if not memsw.exists():
            return
        limit = int((path.parent / "memory.limit_in_bytes").read_text())
        current_memsw = int(memsw.read_text())
        new_limit = value if path.name == "memory.limit_in_bytes" else limit
        new_memsw = value if path.name != "memory.limit_in_bytes" else current_memsw
        if new_memsw < new_limit:
            raise OSError(errno.EINVAL, "memsw below limit", str(path))

    def _v2_inner(self, cgroup: Path) -> bool:
        """A cgroup2 directory below its hierarchy's root (v2, or the hybrid unified mount)."""
        if not (cgroup / "cgroup.subtree_control").exists():
            return False
        return cgroup != self.root if self.version == 2 else cgroup.parent != self.root

    def _subtree_control(self, path: Path, value: str) -> None:
        cgroup = path.parent
        available = (cgroup / "cgroup.controllers").read_text().split()
        enabled = path.read_text().split()
        children = [c for c in cgroup.iterdir() if c.is_dir()]
        for token in value.split():
            name = token[1:]
            if token[0] == "+":
                if name not in available:
                    raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
                if self._v2_inner(cgroup) and (cgroup / "cgroup.procs").read_text().split():
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
                if name not in enabled:
                    enabled.append(name)
                    for child in children:
                        _fill(child, self._v2_controller_files(name))
            elif name in enabled:
                if any(name in (c / "cgroup.subtree_control").read_text().split()
                       for c in children):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
                enabled.remove(name)
                for child in children:
                    for file in self._v2_controller_files(name):
                        (child / file).unlink(missing_ok=True)
        for child in children:
            (child / "cgroup.controllers").write_text(" ".join(enabled) + "\n")
        path.write_text(" ".join(enabled) + "\n")

    def _v2_inner(self, cgroup: Path) -> bool:
        """A cgroup2 directory below its hierarchy's root (v2, or the hybrid unified mount):
        the kernel lets only a root hold processes and delegate controllers at once."""
        if not (cgroup / "cgroup.subtree_control").exists():
            return False
        return cgroup != self.root if self.version == 2 else cgroup.parent != self.root

    # --- helpers for tests ---------------------------------------------------------------
    def put_pid(self, cgroup_dir: Path, pid: int) -> None:
        procs = cgroup_dir / "cgroup.procs"
        procs.write_text(procs.read_text() + f"{pid}\n")

    def values(self, name: str) -> list[str]:
        """Values written to control files called ``name``, in order."""
        return [v for p, v in self.writes if Path(p).name == name]


V1_HIERARCHIES = ("blkio", "cpuset", "devices", "freezer", "memory", "pids", "systemd")


def build_v1(
    root: Path, *, combined: bool = False, swap: bool = True, hybrid: bool = True
) -> FakeKernel:
    fake = FakeKernel(root, 1, swap=swap)
    root.mkdir()
    names = [*V1_HIERARCHIES, "cpu,cpuacct"] if combined else [*V1_HIERARCHIES, "cpu", "cpuacct"]
    for name in names:
        (root / name).mkdir()
        _fill(root / name, fake._v1_files(root / name))
    if combined:
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    _fill(root / "cpuset", {"cpuset.cpus": "0-3", "cpuset.mems": "0"})
    if hybrid:
        (root / "unified").mkdir()
        _fill(
            root / "unified",
            {"cgroup.controllers": "hugetlb", "cgroup.procs": "1", "cgroup.subtree_control": ""},
        )
    return fake


def build_v2(
    root: Path, *, controllers: str = "cpuset cpu io memory hugetlb pids", swap: bool = True
) -> FakeKernel:
    fake = FakeKernel(root, 2, swap=swap)
    root.mkdir()
    _fill(
        root,
        {
            "cgroup.controllers": controllers,
            "cgroup.subtree_control": "",
            "cgroup.procs": "1",
            "cpu.stat": "",
        },
    )
    return fake


@pytest.fixture
def cgroup_v1(tmp_path: Path) -> Callable[..., FakeKernel]:
    """Factory: a fake v1 (by default hybrid, separate cpu and cpuacct) tree under tmp_path."""

    def make(**kwargs: bool) -> FakeKernel:
        return build_v1(tmp_path / "cgroup", **kwargs)

    return make


@pytest.fixture
def cgroup_v2(tmp_path: Path) -> Callable[..., FakeKernel]:
    """Factory: a fake v2 tree under tmp_path."""

    def make(**kwargs: object) -> FakeKernel:
        return build_v2(tmp_path / "cgroup", **kwargs)  # type: ignore[arg-type]

    return make
