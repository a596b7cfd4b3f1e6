"""<root>/format: a state of a newer format is refused and left untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from cri.store.state_format import FILE, FORMAT, NewerState, claim


def test_a_new_or_unmarked_root_gets_this_format(tmp_path: Path) -> None:
    claim(tmp_path / "fresh")
    assert (tmp_path / "fresh" / FILE).read_text() == f"{FORMAT}\n"
    old = tmp_path / "old"
    (old / "images").mkdir(parents=True)  # state of a pycri from before the file existed
    claim(old)
    claim(old)  # and again at the next start
    assert (old / FILE).read_text() == f"{FORMAT}\n"


@pytest.mark.parametrize(("text", "says"), [(f"{FORMAT + 1}\n", "written by a newer pycri"),
                                            ("v2\n", "not a state format this pycri knows")])
def test_a_newer_or_unknown_format_is_refused_and_kept(tmp_path: Path, text: str, says: str
                                                       ) -> None:
    (tmp_path / FILE).write_text(text)
    with pytest.raises(NewerState, match=says):
        claim(tmp_path)
    assert (tmp_path / FILE).read_text() == text
