from __future__ import annotations

import json
from pathlib import Path

import pytest

from cri.cli import main
from tests.unit.cri.inspect.fakes import write_pod

POD = "d4" * 32


def run(tmp_path: Path, *args: str) -> int:
    return main(["inspect", "--root", str(tmp_path / "root"), "--runroot",
                 str(tmp_path / "run"), *args])


def test_unknown_target_exits_1_with_a_message(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "nope") == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "pycri inspect: no pod or container 'nope'\n"


def test_a_pod_whose_processes_are_gone_is_reported_not_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # pid 2**22 + 1 is above the kernel's pid_max limit: no such process on any host.
    write_pod(tmp_path / "root", POD, pid=(1 << 22) + 1)
    assert run(tmp_path, "--json", "d4d4") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pod"]["id"] == POD
    assert data["processes"][0]["running"] is False
    assert run(tmp_path, POD) == 0
    assert "not running" in capsys.readouterr().out


def test_unreadable_state_says_so_rather_than_not_found(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Root reads any mode, so the refusal is played by the state loader.
    def refuse(root: Path) -> None:
        raise PermissionError(13, "Permission denied", str(root / "sandboxes"))

    monkeypatch.setattr("cri.inspect.state.load_pods", refuse)
    assert run(tmp_path, POD) == 1
    assert "permission denied (run it as root)" in capsys.readouterr().err
