"""The CDI registry over fake spec directories: priorities, conflicts, broken files, changes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from sandbox.cdi.registry import Registry, Unresolvable


def spec(kind: str, devices: dict[str, str], version: str = "0.6.0") -> str:
    """A spec whose each device sets env DEV=<value>."""
    return json.dumps({"cdiVersion": version, "kind": kind, "devices": [
        {"name": n, "containerEdits": {"env": [f"DEV={v}"]}} for n, v in devices.items()]})


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    return etc, run


def env_of(reg: Registry, name: str) -> tuple[str, ...]:
    (r,) = reg.resolve([name])
    return r.edits.env


def test_devices_resolve_in_request_order_once(dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "1", "b": "2"}))
    (etc / "ignored.txt").write_text("not a spec")
    got = Registry([etc, run]).resolve(["example.com/dev=b", "example.com/dev=a",
                                        "example.com/dev=b"])
    assert [(r.name, r.edits.env) for r in got] == [("example.com/dev=b", ("DEV=2",)),
                                                    ("example.com/dev=a", ("DEV=1",))]
    assert got[0].spec is got[1].spec


def test_a_later_directory_overrides_an_earlier_one(dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "static", "b": "static"}))
    (run / "z.yaml").write_text(spec("example.com/dev", {"a": "dynamic"}))
    reg = Registry([etc, run])
    assert env_of(reg, "example.com/dev=a") == ("DEV=dynamic",)
    assert env_of(reg, "example.com/dev=b") == ("DEV=static",)


def test_two_files_of_one_directory_make_their_common_device_unusable(
        dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "1", "b": "1"}))
    (etc / "b.json").write_text(spec("example.com/dev", {"a": "2"}))
    reg = Registry([etc, run])
    with pytest.raises(Unresolvable) as info:
        reg.resolve(["example.com/dev=a", "example.com/dev=b"])
    assert list(info.value.reasons) == ["example.com/dev=a"]
    assert "a.json" in info.value.reasons["example.com/dev=a"]
    assert "b.json" in info.value.reasons["example.com/dev=a"]
    # A later directory settles it.
    (run / "c.json").write_text(spec("example.com/dev", {"a": "3"}))
    assert env_of(reg, "example.com/dev=a") == ("DEV=3",)


def test_unknown_and_invalid_names_are_all_reported(dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "1"}))
    with pytest.raises(Unresolvable) as info:
        Registry([etc, run]).resolve(["example.com/dev=a", "example.com/dev=nope", "gpu0"])
    reasons = info.value.reasons
    assert list(reasons) == ["example.com/dev=nope", "gpu0"]
    assert f"no CDI spec in {etc}, {run} provides it" in reasons["example.com/dev=nope"]
    assert "fully qualified" in reasons["gpu0"]
    assert "example.com/dev=nope" in str(info.value)


def test_missing_directories_provide_nothing(tmp_path: Path) -> None:
    with pytest.raises(Unresolvable):
        Registry([tmp_path / "none"]).resolve(["example.com/dev=a"])


def test_a_broken_file_breaks_only_its_own_devices_and_is_logged_once(
        dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    etc, run = dirs
    (etc / "good.json").write_text(spec("example.com/dev", {"a": "1"}))
    (etc / "gpu.json").write_text(spec("vendor.io/gpu", {"0": "1"}, version="42.0.0"))
    (etc / "junk.yaml").write_text("devices: [")
    reg = Registry([etc, run])
    caplog.set_level(logging.WARNING, logger="sandbox.cdi.registry")
    for _ in range(3):
        assert env_of(reg, "example.com/dev=a") == ("DEV=1",)
        with pytest.raises(Unresolvable) as info:
            reg.resolve(["vendor.io/gpu=0"])
        why = info.value.reasons["vendor.io/gpu=0"]
        # Its own kind's broken file, and the one whose kind is unknown; not the good one.
        assert "gpu.json" in why and "cdiVersion '42.0.0'" in why and "junk.yaml" in why
        assert "good.json" not in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert any("gpu.json" in w for w in warnings) and any("junk.yaml" in w for w in warnings)


def test_a_changed_file_is_read_again(dirs: tuple[Path, Path]) -> None:
    etc, run = dirs
    path = etc / "a.json"
    path.write_text(spec("example.com/dev", {"a": "1"}))
    reg = Registry([etc, run])
    assert env_of(reg, "example.com/dev=a") == ("DEV=1",)
    # Same size, same mtime: the inode of a replace-by-rename still tells.
    tmp = etc / "a.json.tmp"
    tmp.write_text(spec("example.com/dev", {"a": "2"}))
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.rename(path)
    assert env_of(reg, "example.com/dev=a") == ("DEV=2",)
    # Rewritten in place.
    path.write_text(spec("example.com/dev", {"a": "33"}))
    assert env_of(reg, "example.com/dev=a") == ("DEV=33",)
    path.unlink()
    with pytest.raises(Unresolvable):
        reg.resolve(["example.com/dev=a"])
    (run / "b.yaml").write_text(spec("example.com/dev", {"a": "4"}))
    assert env_of(reg, "example.com/dev=a") == ("DEV=4",)


def test_an_unchanged_directory_is_not_read_again(dirs: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    etc, run = dirs
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "1"}))
    reg = Registry([etc, run])
    reg.resolve(["example.com/dev=a"])
    import sandbox.cdi.registry as registry

    def no_load(path: Path) -> None:
        raise AssertionError(f"{path} read again")
    monkeypatch.setattr(registry, "load", no_load)
    assert env_of(reg, "example.com/dev=a") == ("DEV=1",)


def test_a_spec_dir_that_is_no_directory_is_logged_once_and_skipped(
        dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    etc, run = dirs
    run.rmdir()
    run.write_text("not a directory")
    (etc / "a.json").write_text(spec("example.com/dev", {"a": "1"}))
    reg = Registry([etc, run])
    caplog.set_level(logging.WARNING, logger="sandbox.cdi.registry")
    for _ in range(2):
        assert env_of(reg, "example.com/dev=a") == ("DEV=1",)
    assert [r.getMessage() for r in caplog.records] == [
        f"CDI spec directory {run} cannot be listed: Not a directory"]
