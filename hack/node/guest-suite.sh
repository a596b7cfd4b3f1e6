#!/bin/sh
# Inside the node guest (run by hack/node/suite.sh): the node-marked e2e tests on cgroup v2 with
# pycri under its shipped systemd unit, once per cgroup driver, then the critest suite with the
# systemd driver (needs `sh hack/critest.sh --prepare` on the host first, as suite.sh does).
# Extra arguments go to pytest.
set -u
cd "$(dirname "$0")/../.."
export PYCRI_E2E_UNIT="$PWD/contrib/systemd/pycri.service"
rc=0
for driver in systemd cgroupfs; do
  echo "=== node guest: cgroup driver $driver"
  PYCRI_E2E_CGROUP_DRIVER=$driver /opt/pycri/venv/bin/python -m pytest -q -p no:cacheprovider \
    -m node tests/e2e "$@" || rc=1
done
# 130 of critest v1.37.0's specs pass here, its 13 NRI specs included: all but the user
# namespace specs (no handler reports user namespaces), the Windows ones and the digest spec.
echo "=== node guest: critest with NRI, cgroup driver systemd"
PYCRI_CRITEST_NRI=1 PYCRI_CRITEST_CGROUP_DRIVER=systemd sh hack/critest.sh --ci --min-passed 130 || rc=1
exit $rc
