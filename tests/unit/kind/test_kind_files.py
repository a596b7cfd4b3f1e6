"""kind/: the node image's settings agree with pycri's defaults and with each other (the image
itself is built and run by kind/test.sh)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import yaml

from cri.config import APIConfig

KIND = Path(__file__).resolve().parents[3] / "kind"
SOCKET = "unix://" + APIConfig().listen


def test_kubeadm_gives_the_kubelet_pycris_default_socket() -> None:
    cfg = yaml.safe_load((KIND / "cluster.yaml").read_text())
    patches = [yaml.safe_load(p) for p in cfg["kubeadmConfigPatches"]]
    sockets = {p["kind"]: p["nodeRegistration"]["criSocket"] for p in patches}
    assert sockets == {"InitConfiguration": SOCKET, "JoinConfiguration": SOCKET}


def test_crictl_in_the_node_talks_to_pycri() -> None:
    crictl = yaml.safe_load((KIND / "node" / "etc" / "crictl.yaml").read_text())
    assert crictl["runtime-endpoint"] == crictl["image-endpoint"] == SOCKET


def test_the_cgroup_driver_drop_in_follows_the_cgroup_version(tmp_path: Path) -> None:
    # The script writes /etc/pycri/pycri.conf.d/10-kind-cgroup-driver.conf; run it in a copy
    # whose paths point into tmp_path, and read the result as pycri does (TOML).
    script = (KIND / "node" / "kind" / "pycri" / "cgroup-driver").read_text()
    script = script.replace("/etc/pycri", str(tmp_path / "etc"))
    for v2, driver in ((True, "systemd"), (False, "cgroupfs")):
        marker = tmp_path / "cgroup.controllers"
        marker.unlink(missing_ok=True)
        if v2:
            marker.touch()
        subprocess.run(["sh", "-c", script.replace("/sys/fs/cgroup/cgroup.controllers",
                                                   str(marker))], check=True)
        conf = tmp_path / "etc" / "pycri.conf.d" / "10-kind-cgroup-driver.conf"
        assert tomllib.loads(conf.read_text()) == {"pycri": {"runtime": {"cgroup_driver": driver}}}

