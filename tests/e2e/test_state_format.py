"""A state written by a newer pycri (a rollback) is refused, by the daemon and by the offline
import, and left as it was: nothing of it is taken for garbage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.helpers import REPO, Daemon, need_root

pytestmark = pytest.mark.e2e


def test_state_of_a_newer_pycri_is_refused_and_kept() -> None:
    need_root()
    d = Daemon.new("format")
    d.root.mkdir(mode=0o700)
    (d.root / "format").write_text("2\n")
    record = d.root / "images" / "records" / f"{'a' * 64}.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"written_by": "a newer pycri", "layers_as": "it knows"}')
    try:
        log = d.start_fails()
        assert f"the state in {d.root} is format 2, written by a newer pycri" in log
        assert not d.socket.exists()
        imported = subprocess.run(
            [sys.executable, "-m", "cri", "image", "import", str(d.base / "no-such.tar"),
             "--config", str(d.config_path)],
            capture_output=True, text=True, cwd=REPO, timeout=120)
        assert imported.returncode == 2 and "written by a newer pycri" in imported.stderr
        assert (d.root / "format").read_text() == "2\n"
        assert record.read_text().startswith('{"written_by"')
        assert sorted(p.name for p in d.root.iterdir()) == ["format", "images"]
    finally:
        d.cleanup()
