#!/bin/sh
# Smoke test of the node guest, run inside it: sh hack/node/run.sh -- sh hack/node/check.sh
# Asserts what pycri's node tests rely on; prints one line per check and exits non-zero on any
# failure.
set -u
failed=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failed=1; }
check() {  # DESCRIPTION COMMAND...
  what=$1; shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

[ "$(cat /proc/1/comm)" = systemd ] && ok "PID 1 is systemd" || bad "PID 1 is $(cat /proc/1/comm)"
fs=$(stat -f -c %T /sys/fs/cgroup)
[ "$fs" = cgroup2fs ] && ok "/sys/fs/cgroup is cgroup2fs" || bad "/sys/fs/cgroup is $fs"
enabled=$(cat /sys/fs/cgroup/cgroup.subtree_control)
for c in cpuset cpu io memory hugetlb pids; do
  case " $enabled " in
    *" $c "*) ;;
    *) bad "controller $c is not in the root's cgroup.subtree_control ($enabled)" ;;
  esac
done
ok "root cgroup.subtree_control: $enabled"
[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] && ok "AppArmor is enabled" \
  || bad "AppArmor is not enabled"
check "apparmor_parser is installed" command -v apparmor_parser
state=$(systemctl is-system-running)
case $state in
  running) ok "systemd: $state" ;;
  degraded) ok "systemd: $state"; systemctl --failed --no-legend --plain ;;
  *) bad "systemd: $state"; systemctl --failed --no-legend --plain ;;
esac
check "D-Bus system bus answers" busctl --system list
for tool in runc conmon catatonit iptables skopeo sudo; do
  check "$tool is installed" command -v $tool
done
check "the CNI bridge plugin is installed" test -x /usr/lib/cni/bridge
check "sudo works" sudo -n true
start=$(date +%s.%N)
if /opt/pycri/venv/bin/python -c 'import grpc, cri.cli' 2>&1; then
  ok "import grpc, cri.cli from the checkout took $(python3 -c "import time; print(round(time.time() - $start, 2))") s"
else
  bad "import grpc, cri.cli"
fi
where=$(/opt/pycri/venv/bin/python -c 'import cri, os; print(os.path.dirname(os.path.dirname(cri.__file__)))')
[ "$where" = /node/src ] && ok "cri comes from /node/src" || bad "cri comes from $where"
[ -d /node/shared ] && ok "../shared is at /node/shared ($(ls /node/shared | wc -l) entries)" \
  || echo "note /node/shared is absent (no shared/ beside the checkout)"

# A container with runc's systemd cgroup driver: a transient scope under system.slice that
# systemd knows with the container's 64 MiB memory limit.
bundle=$(mktemp -d)
mkdir -p "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev" "$bundle/rootfs/usr"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$bundle/rootfs/$d"; done
(cd "$bundle" && runc spec)
/opt/pycri/venv/bin/python - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/bin/busybox", "sleep", "60"]
spec["root"]["readonly"] = True
spec["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
spec["linux"]["cgroupsPath"] = "system.slice:pycri-check:smoke"
spec["linux"].setdefault("resources", {})["memory"] = {"limit": 64 * 1024 * 1024}
json.dump(spec, open(path, "w"))
PY
if runc --systemd-cgroup run -d -b "$bundle" pycri-check-smoke </dev/null >"$bundle/log" 2>&1; then
  scope=pycri-check-smoke.scope
  max=$(cat /sys/fs/cgroup/system.slice/$scope/memory.max 2>/dev/null)
  unit_max=$(systemctl show -P MemoryMax $scope)
  if [ "$(systemctl is-active $scope)" = active ] && [ "$max" = 67108864 ] && [ "$unit_max" = 67108864 ]; then
    ok "runc --systemd-cgroup: busybox runs in $scope with memory.max 64 MiB"
  else
    bad "runc --systemd-cgroup: $scope is $(systemctl is-active $scope), memory.max '$max', MemoryMax '$unit_max'"
  fi
else
  bad "runc --systemd-cgroup run: $(cat "$bundle/log")"
fi
runc --systemd-cgroup delete -f pycri-check-smoke >/dev/null 2>&1
rm -rf "$bundle"

[ $failed = 0 ] && echo "node guest: all checks passed" || echo "node guest: some checks FAILED"
exit $failed
