"""contrib/systemd/pycri.service: the settings pycri's behaviour relies on, and systemd's own
verdict on the file where systemd-analyze is installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "contrib" / "systemd" / "pycri.service"


def _unit() -> configparser.ConfigParser:
    # strict=False: systemd allows a key more than once (the last one wins for these).
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_waits_for_readiness_and_spares_the_containers() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"  # pycri sends READY=1 (cri/sdnotify.py)
    assert service["ExecStart"] == "/usr/local/bin/pycri serve"
    # SIGKILL only for what is left in the unit's cgroup; conmon is moved out of it.
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["TasksMax"] == "infinity" and service["LimitNOFILE"] == "1048576"
    assert int(service["OOMScoreAdjust"]) < 0
    # The stop timeout leaves room for the daemon's own grace for in-flight calls.
    assert int(service["TimeoutStopSec"]) > 10


def test_the_unit_starts_after_the_network() -> None:
    unit = _unit()["Unit"]
    assert "network-online.target" in unit["Wants"].split()
    assert {"network-online.target", "local-fs.target"} <= set(unit["After"].split())
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify also checks that ExecStart's binary exists: point it at one that does.
    binary = shutil.which("pycri") or shutil.which("true")
    assert binary is not None
    unit = tmp_path / "pycri.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/pycri", binary))
    out = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                         text=True, timeout=60)
    # A setting systemd cannot parse is only a warning (exit 0): any line naming the unit
    # is a failure here.
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if "pycri.service" in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr
