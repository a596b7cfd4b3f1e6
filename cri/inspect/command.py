"""``pycri inspect``: resolve the name, gather, print. Exit 1 for a name that matches nothing
or more than one thing, with the candidates on stderr."""

from __future__ import annotations

import sys
from pathlib import Path

from cri.config import PycriConfig
from cri.inspect import render, report, state
from cri.store import state_format


def paths_of(config: PycriConfig) -> report.Paths:
    runroot = Path(config.runroot)
    roots = {name: config.runtime.handler(name, config.runroot).runtime_root
             for name in config.runtime.handlers}
    return report.Paths(exits_dir=runroot / "exits", runtime_roots=roots, runroot=runroot)


def inspect(config: PycriConfig, query: str, *, as_json: bool) -> int:
    root = Path(config.root)
    try:
        state_format.check(root)  # a newer pycri's records could be misread
        target = state.resolve(query, state.load_pods(root), state.load_containers(root))
    except (state.InspectError, state_format.NewerState) as exc:
        print(f"pycri inspect: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:  # state dirs are 0700: an empty answer would mislead
        print(f"pycri inspect: cannot read {exc.filename}: permission denied (run it as root)",
              file=sys.stderr)
        return 1
    data = report.build(target, paths_of(config))
    sys.stdout.write(render.to_json(data) if as_json else render.human(data))
    return 0
