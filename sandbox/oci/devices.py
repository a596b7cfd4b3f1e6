"""Device nodes for OCI specs: a host device by path (CRI ContainerConfig.devices) and every host
device (privileged containers, as CRI-O and containerd give them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# Not devices a container should get a copy of: its own /dev/pts and mqueue are mounted fresh,
# and /dev/console is the container's own terminal when it has one.
_SKIP_DIRS = frozenset({"pts", "shm", "mqueue", "fd", "hugepages"})
_SKIP_FILES = frozenset({"console", "ptmx"})


class DeviceError(ValueError):
    pass


def device_entry(host_path: Path, container_path: str) -> dict[str, Any]:
    """The ``linux.devices`` entry for host device ``host_path`` (symlinks resolved)."""
    try:
        st = os.stat(host_path)
    except OSError as exc:
        raise DeviceError(f"device {host_path}: {exc.strerror}") from exc
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise DeviceError(f"{host_path} is not a device")
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def host_devices(dev: Path = Path("/dev")) -> list[dict[str, Any]]:
    """Every char and block device under ``dev``, by its host path."""
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(dev):
        if Path(dirpath) == dev:
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in sorted(filenames):
            if Path(dirpath) == dev and name in _SKIP_FILES:
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append(device_entry(path, str(path)))
    return out


def cgroup_rule(entry: dict[str, Any], access: str) -> dict[str, Any]:
    return {"allow": True, "type": entry["type"], "major": entry["major"],
            "minor": entry["minor"], "access": access}
