#!/bin/sh
# Runs the critest conformance suite (kubernetes-sigs/cri-tools) against a pycri daemon of its
# own, then stops everything and leaves nothing behind; exits with critest's code.
#
#   sh hack/critest.sh [--focus REGEX] [critest args...]   (as root)
#   sh hack/critest.sh --prepare                           (host only: the caches, no run)
#   sh hack/critest.sh --ci [--min-passed N] [critest args...]   (the test command's run)
#
# --ci: the run passes when the only failed spec is the one no local registry can serve
# (KNOWN_FAILURE below), at least N specs passed (so that specs skipped by mistake do not
# pass unseen) and nothing was left behind; the pass count is printed either way.
#
# The daemon gets its own root, runroot and socket in a temp dir, a CNI bridge and /24 subnet of
# its own, its own cgroups, and pulls through ../shared/critest/registries.conf from a local
# registry (../shared/critest: registry.sh, with the stand-in images build.py makes). Pods
# critest left, the daemon, the registry, the bridge, cgroups and the temp dir are removed at
# the end, and anything that would not go is reported as LEAKED.
#
# The caches live in the checkout's ignored .cache/, so the node guest (which sees only the
# checkout and ../shared) finds them too; a host run fills them:
#   .cache/tools/cri-tools-VERSION/   critest, crictl and ginkgo (critest runs ginkgo for
#                                     --parallel), copied from hack/tools/build.sh's cache
#   .cache/critest/images-HASH.tar    the registry's storage with build.py's images, HASH from
#                                     ../shared/critest (build.py needs gcc, the guest has none);
#                                     one file, as the guest's 9p reads many small files slowly
#   .cache/critest/last/              critest.log and daemon.log of the last run
# In the node guest: sh hack/critest.sh --prepare on the host first (or any host run), then
#   sh hack/node/run.sh -- 'sh hack/critest.sh'
#
# Knobs (environment):
#   PYCRI_CRITEST_PARALLEL=2          critest --parallel (ginkgo processes)
#   PYCRI_CRITEST_CGROUP_DRIVER=...   writes [pycri.runtime] cgroup_driver (cgroupfs|systemd);
#                                     with systemd default_cgroup_parent is left to the daemon
#   PYCRI_CRITEST_CONMON_CGROUP=...   writes conmon_cgroup as given (may be empty); unset: a
#                                     cgroup of the run's own with cgroupfs, the daemon's default
#                                     with systemd
#   PYCRI_CRITEST_LOG_LEVEL=info      the daemon's log_level
#   PYCRI_CRITEST_NRI=1               runs critest's NRI specs too (--nri-socket): critest's
#                                     plugins connect to the daemon's NRI socket. The daemon
#                                     always serves NRI on a socket of the run (and starts no
#                                     plugins of the host's), so it never takes the node's.
#   PYCRI_CRITEST_REGISTRY_PORT=5000  the local registry's port on 127.0.0.1; when it is taken a
#                                     free one is used with a copy of registries.conf naming it
#   PYCRI_CRITEST_SHARED=../shared/critest   the fixtures' folder
#   PYCRI_PYTHON                      the Python that runs pycri (default: .venv's after
#                                     hack/install.sh; python3 in the node guest, PYCRI_NODE=1)
#   PYCRI_CRI_TOOLS_VERSION           the cri-tools release (hack/tools/build.sh)
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
began=$(date +%s)
say() { echo "critest.sh: [$(($(date +%s) - began)) s] $*" >&2; }

prepare_only=""
focus=""
ci=""
min_passed=0
# critest pulls an image by a digest of the real registry's; the stand-in image of
# ../shared/critest has another digest, and no build can make that one.
KNOWN_FAILURE='public image with digest should be pulled and removed'
while [ $# -gt 0 ]; do
  case $1 in
    --prepare) prepare_only=1; shift ;;
    --ci) ci=1; shift ;;
    --min-passed) [ $# -ge 2 ] || { say "--min-passed needs a number"; exit 2; }; min_passed=$2; shift 2 ;;
    --focus) [ $# -ge 2 ] || { say "--focus needs a REGEX"; exit 2; }; focus=$2; shift 2 ;;
    --focus=*) focus=${1#--focus=}; shift ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[ "$(id -u)" = 0 ] || { say "needs root (it runs a container runtime)"; exit 2; }

version=${PYCRI_CRI_TOOLS_VERSION:-v1.37.0}
shared=$(cd "${PYCRI_CRITEST_SHARED:-$repo/../shared/critest}" && pwd)
tools=$repo/.cache/tools/cri-tools-$version
images_hash=$(cd "$shared" && cat build.py ./*.c | sha256sum | cut -c1-16)
images=$repo/.cache/critest/images-$images_hash.tar

# --- the caches -------------------------------------------------------------------------------

prepare_tools() {
  [ -x "$tools/critest" ] && [ -x "$tools/crictl" ] && [ -x "$tools/ginkgo" ] && return 0
  if ! command -v go >/dev/null && [ -n "${PYCRI_NODE:-}" ]; then
    say "no $tools here: run sh hack/critest.sh --prepare on the host first"
    return 1
  fi
  built=$(sh hack/tools/build.sh critest crictl)
  mkdir -p "$tools"
  for bin in $built "$(dirname "$(echo "$built" | head -1)")/ginkgo"; do
    cp "$bin" "$tools/.$(basename "$bin").$$"
    mv "$tools/.$(basename "$bin").$$" "$tools/$(basename "$bin")"
  done
}

# The images: build.py pushes them to a registry of a temp dir, whose storage is then kept.
prepare_images() {
  [ -f "$images" ] && return 0
  if ! command -v gcc >/dev/null; then
    say "no $images here and no gcc to build them: run sh hack/critest.sh --prepare on the host"
    return 1
  fi
  work=$(mktemp -d /tmp/pycri-critest-images-XXXXXX)
  port=$(free_port)
  say "building the test images (build.py, ~30 s) into $images"
  if CRITEST_REGISTRY_DIR=$work/registry TEST_REGISTRY=127.0.0.1:$port sh "$shared/registry.sh" start >/dev/null &&
     TEST_REGISTRY=127.0.0.1:$port BUSYBOX=$(command -v busybox) python3 "$shared/build.py" >"$work/build.log" 2>&1; then
    ok=1
  else
    ok=""
    cat "$work/build.log" >&2 || true
  fi
  CRITEST_REGISTRY_DIR=$work/registry sh "$shared/registry.sh" stop
  if [ -n "$ok" ]; then
    mkdir -p "$(dirname "$images")"
    tar -C "$work/registry/data" -cf "$images.$$" . && mv "$images.$$" "$images"
  fi
  rm -rf "$work"
  [ -n "$ok" ]
}

# 127.0.0.1:PORT is free: nothing listens there (connections of an earlier run in TIME_WAIT
# do not count, as for the registry, which binds with SO_REUSEADDR).
port_free() {
  python3 -c "
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(('127.0.0.1', int(sys.argv[1])))
except OSError:
    sys.exit(1)" "$1"
}
free_port() {
  python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

if [ -n "${PYCRI_PYTHON:-}" ]; then
  python=$PYCRI_PYTHON
elif [ -n "${PYCRI_NODE:-}" ]; then
  python=python3  # the node guest's venv of pycri's dependencies, first on PATH
else
  sh hack/install.sh >&2
  python=$repo/.venv/bin/python
fi
prepare_tools
prepare_images
if [ -n "$prepare_only" ]; then
  say "ready: $tools and $images"
  exit 0
fi

# --- the run ----------------------------------------------------------------------------------

base=$(mktemp -d /tmp/pycri-critest-XXXXXX)
chmod 700 "$base"
tag=${base##*-}
tag=$(echo "$tag" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9')
bridge=pcrt$tag
cgroup_parent=/pycri-critest-$tag
conmon_cgroup=/pycri-critest-$tag-conmon
sock=$base/run/pycri.sock
nri_sock=$base/run/nri.sock
daemon_pid=""
critest_pid=""
driver=${PYCRI_CRITEST_CGROUP_DRIVER:-}
units_before=""  # systemd_units before the daemon started
registry_dir=$base/registry
mkdir -p "$base/cni" "$base/tmp" "$registry_dir" "$repo/.cache/critest/last"

# A /24 no route on this machine uses yet.
while :; do
  subnet=10.$(shuf -i 180-199 -n 1).$(shuf -i 0-255 -n 1)
  ip -4 route | grep -q "^$subnet\." || break
done

crictl() {
  "$tools/crictl" --config "$base/crictl.yaml" "$@"
}

cgroup_dirs() {  # every cgroup dir this run made: each v1 hierarchy, or the v2 tree
  for name in "$cgroup_parent" "$conmon_cgroup"; do
    for dir in /sys/fs/cgroup"$name" /sys/fs/cgroup/*"$name"; do
      [ -d "$dir" ] && echo "$dir"
    done
  done
  return 0
}

systemd_units() {  # the slices pods go to with the systemd driver, and the units in them
  for slice in pycri.slice test.slice; do
    [ -d "/sys/fs/cgroup/$slice" ] || continue
    echo "$slice"
    for dir in "/sys/fs/cgroup/$slice"/*/; do
      [ -d "$dir" ] && basename "$dir"
    done
  done
  return 0
}

leaked() { echo "critest.sh: LEAKED: $*" >&2; leaks=$((leaks + 1)); }

cleanup() {
  trap - EXIT INT TERM HUP
  leaks=0
  if [ -n "$critest_pid" ]; then
    kill -TERM "-$critest_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "-$critest_pid" 2>/dev/null || true
  fi
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    left=$(crictl pods -q 2>/dev/null || true)
    if [ -n "$left" ]; then
      say "removing the $(echo "$left" | wc -l) pods critest left"
      crictl rmp -f $left >/dev/null 2>&1 || leaked "pods $(echo $left)"
    fi
    kill -TERM "$daemon_pid" 2>/dev/null || true
    i=0
    while kill -0 "$daemon_pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$daemon_pid" 2>/dev/null || true
  fi
  CRITEST_REGISTRY_DIR=$registry_dir sh "$shared/registry.sh" stop
  for pid in $(pgrep -f "conmon.*$base" || true); do
    leaked "conmon $pid"; kill -KILL "$pid" 2>/dev/null || true
  done
  # Processes still in this run's cgroups (containers whose pods did not go) are killed first:
  # a cgroup with processes cannot be removed.
  for dir in $(cgroup_dirs); do
    [ -d "$dir" ] || continue  # v1: cpu and cpuacct are links to cpu,cpuacct
    procs=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    if [ -n "$procs" ]; then
      leaked "processes $(echo $procs) in $dir"
      kill -KILL $procs 2>/dev/null || true
      sleep 0.5
    fi
    [ -n "$(find "$dir" -mindepth 1 -type d)" ] && leaked "cgroups under $dir"
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || leaked "cgroup $dir (busy)"
  done
  # The systemd driver's pod slices and scopes: in the daemon's default pycri.slice, or in
  # critest's own test.slice (its pods' cgroup_parent with that driver). Others may use them
  # too: only what was not there before the run counts, and is stopped.
  if [ "$driver" = systemd ]; then
    for unit in $(systemd_units); do
      case " $units_before " in *" $unit "*) continue ;; esac
      # test.slice is the parent critest names for its pods, as the kubelet names
      # kubepods.slice: systemd makes it for the first pod slice below it and keeps it, and it
      # is the client's, not a pod's. It goes quietly; anything in it counts.
      if [ "$unit" != test.slice ]; then leaked "systemd unit $unit"; fi
      systemctl stop "$unit" 2>/dev/null || true
    done
  fi
  for ns in $(ls /var/run/netns 2>/dev/null | grep '^pycri-' || true); do
    if grep -q "${ns#pycri-}" "$base/daemon.log" 2>/dev/null; then
      leaked "netns $ns"; ip netns del "$ns" 2>/dev/null || true
    fi
  done
  if [ -n "$(ip -o link show master "$bridge" 2>/dev/null)" ]; then leaked "veths on $bridge"; fi
  ip link del "$bridge" 2>/dev/null || true
  if iptables-save 2>/dev/null | grep -q -e "$subnet\." -e "$bridge"; then
    leaked "iptables rules for $subnet/$bridge: $(iptables-save | grep -c -e "$subnet\." -e "$bridge")"
  fi
  for mnt in $(awk -v b="$base" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    leaked "mount $mnt"; umount -l "$mnt" 2>/dev/null || true
  done
  cp "$base/daemon.log" "$base/critest.log" "$repo/.cache/critest/last/" 2>/dev/null || true
  rm -rf "$base"
  if [ "$leaks" = 0 ]; then
    say "cleaned up: nothing left behind"
  else
    say "$leaks left-overs found (removed now)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The registry: a copy of the cached storage (the shared folder is read-only in CI), on port
# 5000 as registries.conf says, or a free port with a copy of registries.conf naming it.
registries_conf=$shared/registries.conf
port=${PYCRI_CRITEST_REGISTRY_PORT:-5000}
if ! port_free "$port"; then
  new=$(free_port)
  say "127.0.0.1:$port is taken: the registry listens on 127.0.0.1:$new"
  sed "s/127\.0\.0\.1:5000/127.0.0.1:$new/g" "$registries_conf" >"$base/registries.conf"
  registries_conf=$base/registries.conf
  port=$new
fi
mkdir "$registry_dir/data"
tar -C "$registry_dir/data" -xf "$images"
CRITEST_REGISTRY_DIR=$registry_dir TEST_REGISTRY=127.0.0.1:$port sh "$shared/registry.sh" start >&2

cat >"$base/cni/10-critest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pycri-critest-$tag",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "dataDir": "$base/ipam", "ranges": [[{"subnet": "$subnet.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
EOF

{
  echo "[pycri]"
  echo "root = \"$base/root\""
  echo "runroot = \"$base/run\""
  echo "log_level = \"${PYCRI_CRITEST_LOG_LEVEL:-info}\""
  echo "[pycri.api]"
  echo "listen = \"$sock\""
  echo "[pycri.runtime]"
  [ -n "$driver" ] && echo "cgroup_driver = \"$driver\""
  [ "$driver" != systemd ] && echo "default_cgroup_parent = \"$cgroup_parent\""
  if [ -n "${PYCRI_CRITEST_CONMON_CGROUP+set}" ]; then
    echo "conmon_cgroup = \"$PYCRI_CRITEST_CONMON_CGROUP\""
  elif [ "$driver" != systemd ]; then
    echo "conmon_cgroup = \"$conmon_cgroup\""
  fi
  echo "[pycri.image]"
  echo "registries_conf = \"$registries_conf\""
  echo "[pycri.network]"
  echo "conf_dir = \"$base/cni\""
  echo "plugin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]"
  echo "netns_dir = \"/var/run/netns\""
  # The bridge does not masquerade and neither does pycri: critest's traffic stays on the node,
  # and a masquerade rule would outlive the daemon.
  echo "masquerade_cidrs = []"
  echo "[pycri.nri]"
  echo "socket_path = \"$nri_sock\""
  echo "plugin_path = \"$base/nri-plugins\""
  echo "plugin_config_path = \"$base/nri-conf\""
} >"$base/pycri.conf"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$sock" "$sock" \
  >"$base/crictl.yaml"

units_before=$(systemd_units | tr '\n' ' ')
setsid "$python" -m cri serve --config "$base/pycri.conf" >"$base/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
i=0
until crictl pods -q >/dev/null 2>&1; do  # ListPodSandbox answers once recovery is done
  if ! kill -0 "$daemon_pid" 2>/dev/null || [ $i -ge 600 ]; then
    say "pycri did not start:"; tail -30 "$base/daemon.log" >&2; exit 1
  fi
  sleep 0.1; i=$((i + 1))
done
say "pycri $(crictl version 2>/dev/null | awk '/RuntimeVersion/ { print $2 }') on $sock," \
  "cgroup driver ${driver:-default}, bridge $bridge $subnet.0/24, registry 127.0.0.1:$port"

set -- --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --config "$base/crictl.yaml" \
  --parallel "${PYCRI_CRITEST_PARALLEL:-2}" --ginkgo.no-color ${focus:+"--ginkgo.focus=$focus"} \
  ${PYCRI_CRITEST_NRI:+--nri-socket="$nri_sock"} "$@"
start=$(date +%s)
# critest --parallel runs ginkgo from PATH; its temp files go to the run's dir. It runs in a
# session of its own, waited for with `wait` (which a signal interrupts, unlike a foreground
# command), so that the clean-up can stop the whole of it (ginkgo and its processes) on a signal.
PATH=$tools:$PATH TMPDIR=$base/tmp setsid sh -c '
  log=$1 rcfile=$2; shift 2
  { rc=0; "$@" || rc=$?; echo $rc >"$rcfile"; } 2>&1 | tee "$log"
' sh "$base/critest.log" "$base/critest.rc" "$tools/critest" "$@" </dev/null &
critest_pid=$!
wait "$critest_pid" || true
critest_pid=""
rc=$(cat "$base/critest.rc")
wall=$(($(date +%s) - start))
cleanup
# critest's summary last, after the clean-up's messages: the failed specs and the counts.
log=$repo/.cache/critest/last/critest.log
failed=$(sed -n '/^Summarizing [0-9]* Failure/,$p' "$log" | grep -e '\[FAIL\]' || true)
echo
[ -z "$failed" ] || echo "$failed"
grep -e '^Ran [0-9]* of' -e ' Passed | ' "$log" || true
say "critest exited with $rc after $wall s (logs: .cache/critest/last/)"
[ -n "$ci" ] || exit "$rc"
passed=$(sed -n 's/.* \([0-9][0-9]*\) Passed | .*/\1/p' "$log" | tail -1)
other=$(echo "$failed" | grep -v -F -e "$KNOWN_FAILURE" | grep . || true)
if [ -z "$passed" ]; then
  say "FAILED: critest gave no summary"; exit 1
elif [ -n "$other" ]; then
  say "FAILED: $(echo "$other" | wc -l) specs failed besides the known one (above); $passed passed"; exit 1
elif [ "$passed" -lt "$min_passed" ]; then
  say "FAILED: $passed specs passed, fewer than the $min_passed expected here (skipped specs: the log)"; exit 1
elif [ "$rc" != 0 ] && [ -z "$failed" ]; then
  say "FAILED: critest exited with $rc and no failed spec"; exit 1
elif [ "$leaks" != 0 ]; then
  say "FAILED: $passed passed, but the run left $leaks things behind"; exit 1
fi
say "passed: $passed specs passed${failed:+, and only the known \"$KNOWN_FAILURE\" failed}"
