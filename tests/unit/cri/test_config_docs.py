"""docs/configuration.md is what cri.config_docs makes of cri/config.py, and documents every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cri import config, config_docs

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_committed_reference_matches_the_config_definitions() -> None:
    assert DOC.read_text() == config_docs.render_markdown(), (
        "docs/configuration.md is out of date with cri/config.py; regenerate it with "
        f"`{config_docs.REGENERATE}` and commit the result")


def _keys(obj: Any, table: str) -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every (table, field) of the config, the entries of named-table families included."""
    out: list[tuple[str, dataclasses.Field[Any]]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _keys(value, f"{table}.{f.name}")
        elif "tables" in f.metadata:
            out += _keys(f.metadata["entry"](), f"{table}.{f.name}.NAME")
        else:
            out.append((table, f))
    return out


def test_every_key_has_a_description_and_is_in_the_reference() -> None:
    text = config_docs.render_markdown()
    keys = _keys(config.PycriConfig(), "pycri")
    assert len(keys) > 40  # the walk reaches into every table
    for table, f in keys:
        # A key without a doc string would be missing from `pycri config` and this page.
        assert f.metadata.get("doc", "").strip(), f"{table}.{f.name} has no doc string in cri/config.py"
        section = text.split(f"\n## [{table}]\n", 1)[1].split("\n## ", 1)[0]
        assert f"- **`{f.name}`** (" in section, f"{table}.{f.name} is not under [{table}]"


def test_the_reference_shows_defaults_and_flags_as_pycri_config_does() -> None:
    text = config_docs.render_markdown()
    assert '- **`listen`** (string, default `"/run/pycri/pycri.sock"`, flag `--listen`)' in text
    assert "- **`enable`** (boolean, default `true`)" in text
    assert 'default `["/opt/cni/bin", "/usr/lib/cni"]`, flag `--cni-plugin-dir`' in text
    assert "Configured by default: `[pycri.runtime.handlers.runc]`" in text
    # Placeholders in doc strings stay text in Markdown instead of becoming HTML tags.
    assert "pycri-pod\\<uid\\>.slice" in text
