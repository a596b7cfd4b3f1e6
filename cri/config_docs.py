"""docs/configuration.md, generated from the definitions ``pycri config`` prints.

Every key, its type, default, command-line flag and doc string come from cri/config.py (and the
flags from cri/cli.py), so the reference cannot say something the daemon does not do. Run

    .venv/bin/python -m cri.config_docs > docs/configuration.md

after changing a key; tests/unit/cri/test_config_docs.py fails while the file is stale. Only
the built-in defaults are rendered, never a config file of the machine it runs on.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any

from cri.cli import FLAG_KEYS
from cri.config import (
    DEFAULT_CONFIG_PATH,
    PycriConfig,
    _scalar_fields,
    _table_maps,
    _tables,
    _toml_value,
)

REGENERATE = ".venv/bin/python -m cri.config_docs > docs/configuration.md"

_HEADER = f"""\
# Configuration reference

<!-- Generated from cri/config.py by `{REGENERATE}`; do not edit by hand. -->

pycri reads `{DEFAULT_CONFIG_PATH}` (or the file `pycri serve --config FILE` names), then every
`*.conf` file of the directory beside it named `<file>.d` (`{DEFAULT_CONFIG_PATH}.d/`), in name
order: a key set by a later file wins. A table of a named family
(`[pycri.runtime.handlers.NAME]`) named again in a later file is amended key by key, not
replaced. Command-line flags of `pycri serve` win over all files. A missing
`{DEFAULT_CONFIG_PATH}` is fine; a file named with `--config` must exist.

An unknown table or key, a value of the wrong type or an invalid value stops `pycri serve`
and `pycri config` with exit code 2 and a message naming the key. Some values can only be
checked when the daemon applies them (a cgroup it cannot create, an AppArmor profile it
cannot load, a binary not found in `PATH`): those stop `pycri serve` the same way at start-up.

`pycri config [--config FILE]` prints the effective configuration (the defaults, the files
and their drop-ins) as TOML, with each key's description as a comment; on a machine without
a config file that is every default below.

This page is generated from the same definitions (cri/config.py):
`{REGENERATE}` rewrites it.
"""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, list):
        return "list of strings"
    return "string"


def _flags() -> dict[str, str]:
    """Dotted key -> the `pycri serve` flag that overrides it."""
    return {key: "--" + dest.replace("_", "-") for dest, key in FLAG_KEYS.items()}


def _text(doc: str) -> str:
    """A doc string as one Markdown paragraph: "<uid>" and "*" are text, not HTML or emphasis."""
    text = " ".join(doc.split())
    for char in ("\\", "<", ">", "*"):
        text = text.replace(char, "\\" + char)
    return text


def _intro(obj: Any) -> str:
    """A table's description: its class docstring after the "[name]" line."""
    doc = inspect.getdoc(type(obj)) or ""
    lines = doc.splitlines()
    return _text(" ".join(lines[1:]))


def _keys(name: str, obj: Any, flags: dict[str, str]) -> list[str]:
    out: list[str] = []
    for f in _scalar_fields(obj):
        value = getattr(obj, f.name)
        facts = [_type_name(value), f"default `{_toml_value(value)}`"]
        flag = flags.get(f"{name}.{f.name}")
        if flag:
            facts.append(f"flag `{flag}`")
        out.append(f"- **`{f.name}`** ({', '.join(facts)}): {_text(str(f.metadata['doc']))}")
    return out


def _table(name: str, obj: Any, flags: dict[str, str]) -> list[str]:
    out = ["", f"## [{name}]", ""]
    intro = _intro(obj)
    if intro:
        out += [intro, ""]
    out += _keys(name, obj, flags)
    for f in _table_maps(obj):
        family = f"{name}.{f.name}"
        entries = getattr(obj, f.name)
        out += ["", f"## [{family}.NAME]", "", _text(str(f.metadata["tables"]))]
        if entries:
            listed = ", ".join(f"`[{family}.{entry}]`" for entry in entries)
            out += ["", f"Configured by default: {listed}, with the defaults below."]
        out.append("")
        sample = f.metadata["entry"]()
        out += _keys(f"{family}.NAME", sample, flags)
    return out


def render_markdown() -> str:
    """docs/configuration.md for the built-in defaults."""
    cfg = PycriConfig()
    flags = _flags()
    lines = _HEADER.rstrip("\n").splitlines()
    for name, obj in _tables(cfg):
        if not dataclasses.is_dataclass(obj):
            continue
        lines += _table(name, obj, flags)
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
