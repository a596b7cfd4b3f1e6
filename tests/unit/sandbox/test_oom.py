from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sandbox import oom

WITH_CAP = "CapEff:\t000001ffffffffff\n"  # everything, CAP_SYS_RESOURCE (24) included
WITHOUT_CAP = "CapEff:\t000001fffeffffff\n"  # everything but CAP_SYS_RESOURCE


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oom, "_warned", False)


def _proc(tmp_path: Path, own: int, caps: str) -> Path:
    (tmp_path / "oom_score_adj").write_text(f"{own}\n")
    (tmp_path / "status").write_text(f"Name:\tpycri\n{caps}CapBnd:\t000001ffffffffff\n")
    return tmp_path


@pytest.mark.parametrize(
    ("own", "requested", "expected"),
    [
        (0, -998, 0),
        (0, -1000, 0),
        (0, 0, 0),
        (0, 500, 500),
        (0, 1000, 1000),
        (0, 5000, 1000),
        (-500, -998, -500),
        (-500, -100, -100),
        (300, 100, 300),
    ],
)
def test_without_cap_sys_resource_floor_is_own_value(
    tmp_path: Path, own: int, requested: int, expected: int
) -> None:
    proc = _proc(tmp_path, own, WITHOUT_CAP)
    assert oom.clamp_oom_score_adj(requested, proc_self=proc) == expected


@pytest.mark.parametrize(
    ("requested", "expected"), [(-998, -998), (-5000, -1000), (5000, 1000), (0, 0)]
)
def test_with_cap_sys_resource_only_range_applies(
    tmp_path: Path, requested: int, expected: int
) -> None:
    proc = _proc(tmp_path, 0, WITH_CAP)
    assert oom.clamp_oom_score_adj(requested, proc_self=proc) == expected


def test_warns_once_per_daemon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _proc(tmp_path, 0, WITHOUT_CAP)
    with caplog.at_level(logging.WARNING, logger="sandbox.oom"):
        oom.clamp_oom_score_adj(500, proc_self=proc)  # no clamp, no warning
        assert caplog.records == []
        for _ in range(3):
            assert oom.clamp_oom_score_adj(-998, proc_self=proc) == 0
    assert len(caplog.records) == 1
    assert "CAP_SYS_RESOURCE" in caplog.records[0].getMessage()
    assert "-998" in caplog.records[0].getMessage()


def test_this_process() -> None:
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert own <= oom.clamp_oom_score_adj(-1000) <= 1000
    assert oom.clamp_oom_score_adj(1000) == 1000
