#!/bin/sh
# The node guest's part of the test suite: the node-marked e2e tests on cgroup v2, with pycri
# under its systemd unit, once with the systemd cgroup driver and once with cgroupfs, inside the
# QEMU guest (README.md). Extra arguments go to pytest (words without spaces).
set -eu
cd "$(dirname "$0")/../.."
sh hack/critest.sh --prepare
exec sh hack/node/run.sh --timeout 2400 -- sh hack/node/guest-suite.sh "$@"
