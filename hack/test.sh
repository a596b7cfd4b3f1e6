#!/bin/sh
# Install everything, then run the whole test suite: lint, types, unit and e2e tests (as root,
# against real runc, conmon, CNI plugins and a real daemon) on this host, then the node-marked
# e2e tests inside the node guest (cgroup v2, systemd, AppArmor; hack/node/). Extra arguments
# go to the host's pytest. PYCRI_NODE_SUITE=0 leaves the guest part out, and says so.
set -eu
cd "$(dirname "$0")/.."
sh hack/install.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
if [ "${PYCRI_NODE_SUITE:-1}" = 0 ]; then
  echo "NOT RUN: the node guest suite (PYCRI_NODE_SUITE=0); run it with sh hack/node/suite.sh"
else
  sh hack/node/suite.sh
fi
