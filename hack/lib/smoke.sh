# Sourced (`. hack/lib/smoke.sh`) by the scripts that bring up a cluster on pycri and run the
# cluster smoke test against it (hack/k8s/cluster.sh, kind/test.sh): one way to run tests/cluster/
# and one way to report it. The caller has set say, python, kubectl, test_image, state and logs,
# and exported PYCRI_CLUSTER_NODE_EXEC when the node is not this machine.

# Runs the smoke test; its exit code is left in smoke_rc (the caller decides what fails).
run_smoke() {
  say "smoke test (tests/cluster/, log: $logs/smoke.log)"
  smoke_rc=0
  PYCRI_CLUSTER_KUBECTL=$kubectl PYCRI_CLUSTER_IMAGE=$test_image \
    PYCRI_CLUSTER_HOSTPATH=$state/smoke PYCRI_CLUSTER_PODS=$logs/pods.txt \
    "$python" -m pytest -p no:cacheprovider -v -rA tests/cluster >"$logs/smoke.log" 2>&1 ||
    smoke_rc=$?
}

# The smoke test's result lines for the closing report.
report_smoke() {
  echo "smoke test (tests/cluster/):"
  grep -E '^(PASSED|FAILED|ERROR) ' "$logs/smoke.log" || true
  tail -1 "$logs/smoke.log"
}
