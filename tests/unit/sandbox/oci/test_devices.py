"""Device entries for OCI specs, read from this machine's real /dev (reading needs no root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandbox.oci.devices import DeviceError, cgroup_rule, device_entry, host_devices


def test_dev_null() -> None:
    st = os.stat("/dev/null")
    entry = device_entry(Path("/dev/null"), "/dev/mynull")
    assert entry == {
        "path": "/dev/mynull",
        "type": "c",
        "major": 1,
        "minor": 3,
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    assert entry["fileMode"] == 0o666


def test_symlink_to_a_device_is_followed(tmp_path: Path) -> None:
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    entry = device_entry(link, "/dev/null")
    assert (entry["type"], entry["major"], entry["minor"]) == ("c", 1, 3)


def test_block_device_when_present() -> None:
    blocks = [p for p in Path("/dev").iterdir()
              if not p.is_symlink() and stat.S_ISBLK(os.lstat(p).st_mode)]
    if not blocks:
        pytest.skip("this machine has no block device node in /dev")
    path = sorted(blocks)[0]
    st = os.stat(path)
    entry = device_entry(path, "/dev/xvda")
    assert entry["type"] == "b"
    assert (entry["major"], entry["minor"]) == (os.major(st.st_rdev), os.minor(st.st_rdev))


def test_regular_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DeviceError, match="not a device"):
        device_entry(f, "/dev/x")
    with pytest.raises(DeviceError, match="not a device"):
        device_entry(tmp_path, "/dev/x")


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="No such file"):
        device_entry(tmp_path / "missing", "/dev/x")
    assert issubclass(DeviceError, ValueError)


def test_host_devices() -> None:
    devices = host_devices()
    by_path = {d["path"]: d for d in devices}
    assert len(by_path) == len(devices)  # each node once
    assert by_path["/dev/null"] == device_entry(Path("/dev/null"), "/dev/null")
    for name, minor in (("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
        if Path("/dev", name).exists():
            assert (by_path[f"/dev/{name}"]["major"], by_path[f"/dev/{name}"]["minor"]) == (1, minor)
    # Not copied: the container mounts its own devpts (with its own ptmx); /dev/console is
    # its terminal, if any. These exist on the host, so leaving them out is a real choice.
    assert Path("/dev/console").exists() and Path("/dev/pts/ptmx").exists()
    assert "/dev/console" not in by_path
    assert "/dev/ptmx" not in by_path
    for path in by_path:
        assert not path.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/", "/dev/fd/"))
    # Only real nodes, never symlinks (/dev/stdin -> /proc/self/fd/0).
    for path, entry in by_path.items():
        mode = os.lstat(path).st_mode
        assert stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        assert entry["type"] == ("c" if stat.S_ISCHR(mode) else "b")
    assert "/dev/stdin" not in by_path


def test_host_devices_of_a_tree_without_nodes(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file").write_text("x")
    (tmp_path / "null").symlink_to("/dev/null")  # a symlink is not a node of this tree
    assert host_devices(tmp_path) == []


def test_cgroup_rule() -> None:
    entry = device_entry(Path("/dev/null"), "/dev/null")
    assert cgroup_rule(entry, "rw") == {"allow": True, "type": "c", "major": 1, "minor": 3,
                                        "access": "rw"}
    fake = {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}
    assert cgroup_rule(fake, "rwm") == {"allow": True, "type": "b", "major": 8, "minor": 0,
                                        "access": "rwm"}
