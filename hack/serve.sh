#!/bin/sh
# Install everything, then run pycri in the foreground with its built-in defaults
# (socket /run/pycri/pycri.sock). Extra arguments go to `pycri serve`.
set -eu
cd "$(dirname "$0")/.."
sh hack/install.sh
exec .venv/bin/pycri serve "$@"
