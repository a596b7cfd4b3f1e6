#!/bin/sh
# Install everything, then run the whole test suite: lint, types, unit and e2e tests (as root,
# against real runc, conmon, CNI plugins and a real daemon). Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
sh hack/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
