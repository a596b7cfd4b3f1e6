"""A state written by a newer pycri (a rollback) is refused by the daemon, the offline import and
`pycri inspect`, and left as it was: nothing of it is taken for garbage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.helpers import REPO, Daemon, need_root

pytestmark = pytest.mark.e2e


def _cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri", *args, "--config", str(d.config_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


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
        imported = _cli(d, "image", "import", str(d.base / "no-such.tar"))
        assert imported.returncode == 2 and "written by a newer pycri" in imported.stderr
        inspected = _cli(d, "inspect", "any-pod")  # reads only, but could misread
        assert inspected.returncode == 1 and "written by a newer pycri" in inspected.stderr
        assert (d.root / "format").read_text() == "2\n"
        assert record.read_text().startswith('{"written_by"')
        assert sorted(p.name for p in d.root.iterdir()) == ["format", "images"]
    finally:
        d.cleanup()
