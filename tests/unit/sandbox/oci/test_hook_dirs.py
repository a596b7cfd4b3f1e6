"""Hook directories: a later one masks a file of the same name, order by lower-cased name,
changes seen, invalid files skipped with one warning per version."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.hook_dirs import HookDirs
from tests.unit.sandbox.oci.test_hooks import SH, hook_json


def write(d: Path, name: str, **over: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    path.write_text(json.dumps(hook_json(**over)))
    return path


def args_of(dirs: HookDirs) -> list[tuple[str, list[str]]]:
    return [(h.name, h.entry.get("args", [])) for h in dirs.hooks()]


def test_a_later_directory_masks_a_file_of_the_same_name(tmp_path: Path) -> None:
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    write(usr, "10-x.json", hook={"path": SH, "args": ["vendor"]})
    write(usr, "20-y.json", hook={"path": SH, "args": ["vendor-y"]})
    write(etc, "10-x.json", hook={"path": SH, "args": ["admin"]})
    dirs = HookDirs([str(usr), str(etc), str(tmp_path / "missing")])
    assert args_of(dirs) == [("10-x.json", ["admin"]), ("20-y.json", ["vendor-y"])]
    # Removing the override brings the vendor's file back.
    (etc / "10-x.json").unlink()
    assert args_of(dirs) == [("10-x.json", ["vendor"]), ("20-y.json", ["vendor-y"])]


def test_an_invalid_override_masks_too(tmp_path: Path) -> None:
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    write(usr, "x.json")
    write(etc, "x.json", version="2.0.0")
    assert HookDirs([str(usr), str(etc)]).hooks() == []


def test_order_is_the_lower_cased_file_name(tmp_path: Path) -> None:
    for name in ("02-b.json", "01-UPPER.json", "01-lower.json", "notes.txt"):
        write(tmp_path, name)
    assert [h.name for h in HookDirs([str(tmp_path)]).hooks()] == \
        ["01-lower.json", "01-UPPER.json", "02-b.json"]


def test_changed_added_and_removed_files_are_seen(tmp_path: Path) -> None:
    dirs = HookDirs([str(tmp_path)])
    assert dirs.hooks() == []
    path = write(tmp_path, "a.json", hook={"path": SH, "args": ["one"]})
    assert args_of(dirs) == [("a.json", ["one"])]
    path.write_text(json.dumps(hook_json(hook={"path": SH, "args": ["two", "2"]})))
    assert args_of(dirs) == [("a.json", ["two", "2"])]
    path.unlink()
    assert dirs.hooks() == []


def test_invalid_files_are_warned_about_once_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "good.json")
    bad = write(tmp_path, "bad.json", stages=["prestart", "later"])
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "dir.json").mkdir()
    dirs = HookDirs([str(tmp_path)])
    with caplog.at_level(logging.WARNING, logger="sandbox.oci.hook_dirs"):
        for _ in range(3):
            assert [h.name for h in dirs.hooks()] == ["good.json"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings
    assert any(str(bad) in w and "unknown stage 'later'" in w for w in warnings)
    assert any(str(tmp_path / "broken.json") in w and "not JSON" in w for w in warnings)
    assert any(str(tmp_path / "dir.json") in w and "not a regular file" in w for w in warnings)
    # A new version of a bad file is warned about again.
    caplog.clear()
    bad.write_text(json.dumps(hook_json(stages=["nowhen"])))
    with caplog.at_level(logging.WARNING, logger="sandbox.oci.hook_dirs"):
        dirs.hooks()
        dirs.hooks()
    assert [r.getMessage() for r in caplog.records] == [
        f"OCI hook file {bad} skipped: unknown stage 'nowhen' "
        "(stages: prestart, createRuntime, createContainer, startContainer, poststart, "
        "poststop)"]


def test_a_hook_whose_binary_appears_later_is_taken_without_touching_its_file(
        tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "hook"
    write(tmp_path / "d", "late.json", hook={"path": str(binary)})
    dirs = HookDirs([str(tmp_path / "d")])
    assert dirs.hooks() == []
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert [h.name for h in dirs.hooks()] == ["late.json"]


def test_an_unreadable_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "good.json")
    (tmp_path / "loop.json").symlink_to("loop.json")
    (tmp_path / "dangling.json").symlink_to("nowhere")
    with caplog.at_level(logging.WARNING, logger="sandbox.oci.hook_dirs"):
        assert [h.name for h in HookDirs([str(tmp_path)]).hooks()] == ["good.json"]
    assert f"{tmp_path / 'loop.json'} skipped: cannot read it" in caplog.text
    assert f"{tmp_path / 'dangling.json'} skipped: cannot read it" in caplog.text


def test_a_hooks_dir_that_is_a_file_is_warned_about_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    dirs = HookDirs([str(tmp_path / "file")])
    with caplog.at_level(logging.WARNING, logger="sandbox.oci.hook_dirs"):
        assert dirs.hooks() == []
        assert dirs.hooks() == []
    assert [r.getMessage() for r in caplog.records] == [
        f"OCI hooks directory {tmp_path / 'file'} skipped: cannot list it: Not a directory"]
