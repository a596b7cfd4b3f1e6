#!/bin/sh
# kind with pycri as the node's runtime, end to end on this machine, then all of it taken down:
#
#   sh kind/test.sh              (as root)
#   sh kind/test.sh --teardown   (only the clean-up, after a run that was killed)
#
# 1. A Docker engine of its own: Debian's docker.io, dockerd started here on its own socket
#    (/run/pycri-kind/docker.sock), data root (/var/lib/pycri-kind/docker) and exec root, with
#    no iptables rules, no docker0 bridge and no ip_forward change (--iptables=false
#    --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none); nothing else uses it.
#    Its default runtime is kind/host/runc-no-sys-resource: this machine's capability bounding
#    set lacks CAP_SYS_RESOURCE, so `docker run --privileged` (which kind always uses) fails
#    without it ("unable to apply caps: operation not permitted").
# 2. The node image: kindest/node cannot be pulled here, so kind/base/build.sh makes a stand-in
#    (Debian 12 + systemd by mmdebstrap, kubelet/kubeadm/kubectl of hack/k8s/build.sh) and
#    kind/build.sh builds kind/Dockerfile on it (--offline: pycri's dependencies as wheels
#    made here), with the cluster's images (hack/k8s/images.py, from the static binaries)
#    carried in and imported into pycri's store at first boot. Nothing is pulled.
# 3. `kind create cluster` (kind of kind/build-kind.sh) with kind/cluster.yaml plus what only
#    this machine needs: a kubelet patch for cgroup v1 (failCgroupV1: false; the cgroup
#    driver the kubelet takes from pycri, cgroupfs here), no kindnet (its image cannot be
#    pulled) but a bridge CNI config mounted into the node, and a folder shared with the node
#    for the smoke test.
# 4. The cluster smoke test (tests/cluster/, the kubernetes client and kubectl through the API
#    server's published port; traffic of the node's own through `docker exec`).
# 5. critest inside the node against the node's pycri service (the kubelet stopped first: it
#    would kill critest's pods as pods it does not know), with NRI, pulling from a registry
#    in the node (../shared/critest's images, Debian's docker-registry) via a pycri drop-in.
# 6. Everything removed: the cluster, dockerd, its data and exec roots, the bridge kind's
#    network made, Docker's cgroups, what dockerd makes outside its roots (/etc/docker/key.json,
#    /run/docker, /run/containerd); checked against what was there before (links, iptables and
#    ip6tables rules, forwarding sysctls, mounts, processes), anything left is LEAKED.
# It passes when the smoke test passes, critest's only failure is the digest spec no local
# registry can serve (as hack/critest.sh --ci) with at least PYCRI_KIND_CRITEST_MIN_PASSED
# (121, this host's count with NRI) passed, and nothing was left behind.
#
# The closing lines give critest's counts, the smoke results and the wall time ("cold" when the
# Debian root file system had to be built). Logs of the last run: .cache/kind/last/.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
began=$(date +%s)
say() { echo "kind/test.sh: [$(($(date +%s) - began)) s] $*" >&2; }

. hack/lib/teardown-option.sh
. hack/lib/smoke.sh
[ "$(id -u)" = 0 ] || { say "needs root (it runs dockerd)"; exit 2; }

k8s=${PYCRI_K8S_VERSION:-v1.36.3}
name=pycri-kind
node=$name-control-plane
tag=pycri-kind-node:test
state=/var/lib/pycri-kind
run=/run/pycri-kind
logs=$repo/.cache/kind/last
pod_subnet=10.244.0.0/24
test_image=localhost/pycri-test/busybox:1
# critest specs that pass on this host with NRI (hack/critest.sh --ci's count): fewer means
# specs were skipped or broke in the node.
min_passed=${PYCRI_KIND_CRITEST_MIN_PASSED:-121}
export DOCKER_HOST=unix://$run/docker.sock
export DOCKER_BUILDKIT=0  # Debian's docker has no buildx; kind/Dockerfile needs no BuildKit
# Debian's docker CLI, containerd and containerd-shim-runc-v2 before any other on PATH (a newer
# shim breaks every `docker run` of this dockerd).
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export PATH
# kubectl and the Python client would send the API server's traffic to a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY || true
sysctls="net.ipv4.ip_forward net.ipv6.conf.all.forwarding"
docker_paths="/etc/docker/key.json /run/docker /run/containerd"

# --- clean-up -----------------------------------------------------------------------------------

leaks=0
leaked() { echo "kind/test.sh: LEAKED: $*" >&2; leaks=$((leaks + 1)); }
kind_bin=""

rules() {  # the iptables and ip6tables rules and chains, without counters
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    "$ipt-save" 2>/dev/null | grep -v -e '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
  done
}

links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }

docker_cgroups() {  # Docker's cgroup parent in every hierarchy (cgroupfs driver: /docker)
  for dir in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
    [ -d "$dir" ] && echo "$dir"
  done
  return 0
}

our_mounts() {
  awk -v s="$state" -v r="$run" 'index($5, s) == 1 || index($5, r) == 1 { print $5 }' \
    /proc/self/mountinfo | sort -r
}

dockerd_pid() { cat "$run/dockerd.pid" 2>/dev/null || true; }

cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  set +e
  say "tearing down"
  mkdir -p "$logs"
  pid=$(dockerd_pid)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    if [ -n "$kind_bin" ]; then
      "$kind_bin" delete cluster --name "$name" --kubeconfig "$state/kubeconfig" >/dev/null 2>&1
    fi
    left=$(docker ps -a -q 2>/dev/null)
    [ -n "$left" ] && docker rm -f -v $left >/dev/null 2>&1
    docker network rm kind >/dev/null 2>&1
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null && { leaked "dockerd $pid did not stop in 30 s (killed)"; kill -KILL "$pid"; }
  fi
  [ -f "$state/dockerd.log" ] && cp "$state/dockerd.log" "$logs/"
  # Processes of this Docker: its containerd, shims and containers (the node's systemd...).
  for p in $(pgrep -f "$run/|$state/" 2>/dev/null); do
    [ "$p" = $$ ] && continue
    leaked "process $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
    kill -KILL "$p" 2>/dev/null
  done
  for mnt in $(our_mounts); do
    leaked "mount $mnt"; umount -l "$mnt"
  done
  # Links made meanwhile by this Docker (kind's network bridge br-<id>, the node's veth):
  # dockerd removes them as it deletes the network; any left is removed here. Only names
  # Docker uses, so that links other runs make meanwhile are left alone.
  if [ -f "$state/links.before" ]; then
    for link in $(links | grep -v -x -F -f "$state/links.before" | grep -e '^br-' -e '^veth' -e '^docker'); do
      case $link in
        veth*) master=$(ip -o link show "$link" | sed -n 's/.* master \(br-[0-9a-f]*\) .*/\1/p')
               [ -n "$master" ] || continue ;;
      esac
      leaked "link $link"; ip link del "$link" 2>/dev/null
    done
  fi
  # Docker's cgroups (empty once its containers are gone), when it made them.
  for dir in $(docker_cgroups); do
    grep -q -x -F "$dir" "$state/cgroups.before" 2>/dev/null && continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$dir" ] && leaked "cgroup $dir (busy)"
  done
  # What dockerd makes outside its roots whatever its flags: its trust key, its plugin folder,
  # the folder of containerd's shim sockets. Removed when this run made them (and they are
  # empty again).
  if [ -f "$state/paths.before" ]; then
    for path in $docker_paths; do
      grep -q -x -F "$path" "$state/paths.before" && continue
      if [ -d "$path" ]; then
        find "$path" -depth -type d -empty -delete 2>/dev/null
      else
        rm -f "$path"
      fi
      [ -e "$path" ] && leaked "$path (not empty)"
    done
  fi
  if [ -f "$state/rules.before" ]; then
    new=$(rules | grep -v -x -F -f "$state/rules.before" | grep -i -e docker -e "$name" -e 'br-')
    [ -n "$new" ] && leaked "iptables rules: $(echo "$new" | head -5 | tr '\n' ';')"
  fi
  if [ -f "$state/sysctls.before" ]; then
    while read -r key value; do
      [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] && continue
      leaked "sysctl $key (was $value; put back)"; sysctl -q -w "$key=$value"
    done <"$state/sysctls.before"
  fi
  rm -rf "$state" "$run"
  if [ "$leaks" = 0 ]; then say "cleaned up: nothing left behind"; else say "$leaks left-overs (removed now)"; fi
  [ "$leaks" = 0 ] || [ "$rc" != 0 ] || rc=1
  exit "$rc"
}

if [ -n "$teardown_only" ]; then
  kind_bin=$(sh kind/build-kind.sh 2>/dev/null || true)
  trap cleanup EXIT
  exit 0
fi
if [ -d "$state" ] || [ -d "$run" ]; then
  say "$state or $run is left from an earlier run: sh kind/test.sh --teardown first"
  exit 2
fi

# --- tools, binaries, images ----------------------------------------------------------------------

if ! dpkg-query -W -f='${Status}' docker.io 2>/dev/null | grep -q "ok installed"; then
  say "installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
kind_bin=$(sh kind/build-kind.sh)
bins=$(PYCRI_K8S_VERSION=$k8s sh hack/k8s/build.sh kubeadm kubelet kubectl kube-apiserver \
  kube-controller-manager kube-scheduler kube-proxy etcd coredns)
kubeadm=$(echo "$bins" | grep '/kubeadm$')
kubectl=$(echo "$bins" | grep '/kubectl$')
k8s_dir=$(dirname "$kubeadm")
sh hack/install.sh >&2
python=$repo/.venv/bin/python
# critest, ginkgo and the registry's storage with critest's images (hack/critest.sh's caches).
sh hack/critest.sh --prepare >&2
critest_tools=$repo/.cache/tools/cri-tools-${PYCRI_CRI_TOOLS_VERSION:-v1.37.0}
registry_tar=$(ls -t "$repo"/.cache/critest/images-*.tar | head -1)
say "cluster images (hack/k8s/images.py)"
refs=$("$kubeadm" config images list --kubernetes-version "$k8s" 2>/dev/null)
archives=$(python3 hack/k8s/images.py --cache "$(dirname "$k8s_dir")" --bin "$k8s_dir" \
  --bin "$(echo "$bins" | grep '/etcd$')" --bin "$(echo "$bins" | grep '/coredns$')" \
  $refs "$test_image")
archives=$(echo "$archives" | awk '{ print $2 }')

# --- what the clean-up compares with -------------------------------------------------------------

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
rm -rf "$logs"
mkdir -p "$logs" "$state/cni" "$state/smoke" "$run"
chmod 700 "$state" "$run"
links >"$state/links.before"
rules >"$state/rules.before"
docker_cgroups >"$state/cgroups.before"
for path in $docker_paths; do if [ -e "$path" ]; then echo "$path"; fi; done >"$state/paths.before"
for key in $sysctls; do echo "$key $(sysctl -n "$key")"; done >"$state/sysctls.before"

# --- dockerd ---------------------------------------------------------------------------------------

say "starting dockerd on $DOCKER_HOST"
echo '{}' >"$run/daemon.json"  # not the host's /etc/docker/daemon.json
setsid dockerd --config-file "$run/daemon.json" -H "$DOCKER_HOST" --pidfile "$run/dockerd.pid" \
  --data-root "$state/docker" --exec-root "$run/exec" \
  --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
  --add-runtime "nosysres=$repo/kind/host/runc-no-sys-resource" --default-runtime nosysres \
  >"$state/dockerd.log" 2>&1 </dev/null &
i=0
until docker version >/dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 300 ] || { say "dockerd did not start:"; tail -20 "$state/dockerd.log" >&2; exit 1; }
  sleep 0.1
done

# --- the node image ------------------------------------------------------------------------------

cold=warm
ls /var/cache/pycri/kind/rootfs-*.tar >/dev/null 2>&1 || cold=cold
image_began=$(date +%s)
base=$(sh kind/base/build.sh)
set --
for archive in $archives; do set -- "$@" --image "$archive"; done
sh kind/build.sh --base "$base" --tag "$tag" --offline "$@" >/dev/null
image_s=$(($(date +%s) - image_began))
say "node image $tag built on $base in $image_s s"

# --- the cluster ----------------------------------------------------------------------------------

# A bridge network for pods on the node (kindnet's image cannot be pulled here), with the
# portmap and bandwidth plugins critest's specs use.
cat >"$state/cni/10-pycri-kind.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pycri-kind",
  "plugins": [
    {"type": "bridge", "bridge": "pycrikind0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$pod_subnet"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
EOF
"$python" - kind/cluster.yaml "$state/cluster.yaml" "$tag" "$state" "$pod_subnet" <<'EOF'
import os
import sys

import yaml

src, dst, image, state, pod_subnet = sys.argv[1:]
cfg = yaml.safe_load(open(src))
cfg["networking"] = {"disableDefaultCNI": True, "podSubnet": pod_subnet}
node = cfg["nodes"][0]
node["image"] = image
node["extraMounts"] = [
    {"hostPath": f"{state}/cni", "containerPath": "/etc/cni/net.d", "readOnly": True},
    {"hostPath": f"{state}/smoke", "containerPath": f"{state}/smoke"},
]
if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
    # cgroup v1 host: "kubelet is configured to not run on a host using cgroup v1" otherwise.
    cfg["kubeadmConfigPatches"].append("kind: KubeletConfiguration\nfailCgroupV1: false\n")
yaml.safe_dump(cfg, open(dst, "w"), sort_keys=False)
EOF
say "kind create cluster (log: $logs/kind-create.log)"
if ! "$kind_bin" create cluster --name "$name" --config "$state/cluster.yaml" \
     --kubeconfig "$state/kubeconfig" --wait 300s --retain >"$logs/kind-create.log" 2>&1; then
  tail -30 "$logs/kind-create.log" >&2
  docker exec "$node" journalctl --no-pager -u pycri -u kubelet >"$logs/node-journal.log" 2>&1
  say "kind create cluster failed"
  exit 1
fi
created_s=$(($(date +%s) - began))
export KUBECONFIG=$state/kubeconfig
"$kubectl" -n kube-system rollout status deployment/coredns --timeout=300s >&2
"$kubectl" -n kube-system rollout status daemonset/kube-proxy --timeout=300s >&2
"$kubectl" get nodes -o wide >"$logs/nodes.txt"

# --- the smoke test --------------------------------------------------------------------------------

PYCRI_CLUSTER_NODE_EXEC="docker exec $node" && export PYCRI_CLUSTER_NODE_EXEC
run_smoke

# --- critest against the node's pycri -----------------------------------------------------------------

say "critest in the node (log: $logs/critest.log)"
docker exec "$node" systemctl stop kubelet
docker exec "$node" mkdir -p /kind/critest/registry/data
docker cp "$(command -v docker-registry)" "$node:/usr/local/bin/docker-registry"
docker cp "$critest_tools/critest" "$node:/usr/local/bin/critest"
docker cp "$critest_tools/ginkgo" "$node:/usr/local/bin/ginkgo"
docker cp "${PYCRI_CRITEST_SHARED:-$repo/../shared/critest}/registries.conf" "$node:/kind/critest/registries.conf"
docker exec -i "$node" tar -C /kind/critest/registry/data -xf - <"$registry_tar"
docker exec -i "$node" sh -c 'cat >/kind/critest/registry/config.yml' <<'EOF'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /kind/critest/registry/data
http:
  addr: 127.0.0.1:5000
EOF
docker exec -d "$node" sh -c 'exec docker-registry serve /kind/critest/registry/config.yml >/kind/critest/registry/log 2>&1'
docker exec -i "$node" sh -c 'cat >/etc/pycri/pycri.conf.d/90-critest.conf && systemctl restart pycri' <<'EOF'
# kind/test.sh: critest's images come from the registry in the node.
[pycri.image]
registries_conf = "/kind/critest/registries.conf"
EOF
critest_began=$(date +%s)
critest_rc=0
docker exec "$node" sh -c 'cd /tmp && critest --runtime-endpoint unix:///run/pycri/pycri.sock \
  --image-endpoint unix:///run/pycri/pycri.sock --parallel 2 --ginkgo.no-color \
  --nri-socket=/var/run/nri/nri.sock' >"$logs/critest.log" 2>&1 || critest_rc=$?
critest_s=$(($(date +%s) - critest_began))
docker exec "$node" journalctl --no-pager -u pycri -u kubelet >"$logs/node-journal.log" 2>&1

# --- summary -----------------------------------------------------------------------------------------

set +e
cleanup_rc=0
trap - EXIT
( cleanup ) || cleanup_rc=$?
wall=$(($(date +%s) - began))
passed=$(sed -n 's/.* \([0-9][0-9]*\) Passed | .*/\1/p' "$logs/critest.log" | tail -1)
failed=$(sed -n '/^Summarizing [0-9]* Failure/,$p' "$logs/critest.log" | grep -e '\[FAIL\]')
echo
echo "kubectl get nodes -o wide:"
cat "$logs/nodes.txt"
echo
report_smoke
echo
echo "critest in the node against its pycri (NRI on), exit $critest_rc after $critest_s s:"
[ -z "$failed" ] || echo "$failed"
grep -e '^Ran [0-9]* of' -e ' Passed | ' "$logs/critest.log"
say "wall time $((wall / 60)) min $((wall % 60)) s ($cold: node image ${image_s} s, cluster up at ${created_s} s; logs: .cache/kind/last/)"
# critest passes when only the spec no local registry can serve failed (as hack/critest.sh --ci).
other=$(echo "$failed" | grep -v -F -e 'public image with digest should be pulled and removed' | grep .)
if [ "$smoke_rc" != 0 ] || [ -z "$passed" ] || [ -n "$other" ] || [ "$cleanup_rc" != 0 ] ||
   [ "${passed:-0}" -lt "$min_passed" ]; then
  say "FAILED (smoke exit $smoke_rc; critest: $passed passed, at least $min_passed expected," \
    "${other:+other specs failed than the known one,} exit $critest_rc; clean-up exit $cleanup_rc)"
  exit 1
fi
say "passed"
