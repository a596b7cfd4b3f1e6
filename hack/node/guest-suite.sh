#!/bin/sh
# Inside the node guest (run by hack/node/suite.sh): the node-marked e2e tests on cgroup v2 with
# pycri under its shipped systemd unit, once per cgroup driver. Extra arguments go to pytest.
set -u
cd "$(dirname "$0")/../.."
export PYCRI_E2E_UNIT="$PWD/contrib/systemd/pycri.service"
rc=0
for driver in systemd cgroupfs; do
  echo "=== node guest: cgroup driver $driver"
  PYCRI_E2E_CGROUP_DRIVER=$driver /opt/pycri/venv/bin/python -m pytest -q -p no:cacheprovider \
    -m node tests/e2e "$@" || rc=1
done
exit $rc
