#!/bin/sh
# A single-node Kubernetes cluster made by kubeadm on this host with pycri as its runtime, a
# smoke test through its API server (tests/cluster/), then all of it taken down; exits with
# the smoke test's code (1 when the cluster did not come up, 2 when it cannot start).
#
#   sh hack/k8s/cluster.sh              (as root)
#   sh hack/k8s/cluster.sh --teardown   (only the clean-up, after a run that was killed)
#
# Needs the binaries of hack/k8s/build.sh (kubeadm, kubelet, kubectl, the control plane, etcd,
# CoreDNS; built when missing), crictl (hack/tools/build.sh), gcc (a static pause), Debian's
# busybox and iptables (put into images), and the host ports kubeadm uses (6443, 2379-2380,
# 10248-10259) free. Nothing is pulled: the images are made from those binaries
# (hack/k8s/images.py, cached in /var/cache/pycri/k8s/images-KEY/) and imported with
# `pycri image import`; pycri's registries.conf blocks every registry the cluster names.
#
# The node: a link of its own (pycrik8s0) with 10.254.254.1/32 is the node's address (the API
# server's advertise address and the kubelet's node-ip), so no cluster traffic leaves the host;
# pods get 10.244.0.0/24 on a bridge of their own (pycrik8sbr0) through pycri's CNI config
# (bridge + host-local, no masquerade); services 10.96.0.0/16. pycri runs with its own config
# (root in /var/lib/pycri-cluster, socket /run/pycri/pycri.sock, cgroupfs driver).
#
# This host's limits, and how they are met (each with the error it avoids):
# - no systemd as PID 1: kubeadm's kubelet-start phase cannot `systemctl restart kubelet`
#   ("unable to start the kubelet service"), so this script runs the kubelet itself, restarted
#   when it exits as systemd's Restart=always would, with the flags of kubeadm's drop-in, once
#   kubeadm has written /var/lib/kubelet/config.yaml;
# - cgroup v1: the kubelet refuses to start unless failCgroupV1 is false ("kubelet is
#   configured to not run on a host using cgroup v1"), and kubeadm's preflight reports
#   SystemVerification as an error ("cgroups v1 support is deprecated ..."), ignored by name;
# - no dummy network driver in this kernel ("ip link add ... type dummy": "Error: Unknown
#   device type."): the node's link is a bridge without ports, which holds an address as well;
# - missing CAP_SYS_RESOURCE: the kubelet cannot set its own oom_score_adj of -999
#   ("write /proc/self/oom_score_adj: permission denied") nor raise its open-files limit
#   ("Failed to set rlimit on max file handles"), and pycri raises pods' negative
#   oom_score_adj to its own: all are logged and none stops anything.
# Every other preflight error is fatal: see the comments in the generated kubeadm.yaml.
#
# Logs of the last run: .cache/cluster/last/ (kubeadm-init.log, kubelet.log, pycri.log,
# smoke.log, pods.txt, kubeadm-reset.log).
set -eu
cd "$(dirname "$0")/../.."
repo=$(pwd)
began=$(date +%s)
say() { echo "cluster.sh: [$(($(date +%s) - began)) s] $*" >&2; }

. hack/lib/teardown-option.sh
. hack/lib/smoke.sh
[ "$(id -u)" = 0 ] || { say "needs root (it runs a container runtime and a kubelet)"; exit 2; }

k8s=${PYCRI_K8S_VERSION:-v1.36.3}
node_ip=10.254.254.1
node_link=pycrik8s0
bridge=pycrik8sbr0
pod_subnet=10.244.0.0/24
svc_subnet=10.96.0.0/16
state=/var/lib/pycri-cluster       # pycri's root, CNI config and leases, generated configs
runroot=/run/pycri-cluster          # pycri's runroot
sock_dir=/run/pycri
sock=$sock_dir/pycri.sock
conmon_cgroup=/pycri-cluster-conmon
logs=$repo/.cache/cluster/last
export KUBECONFIG=/etc/kubernetes/admin.conf
# kubectl and the Python client would send the API server's traffic to a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY || true

# Host settings the kubelet changes at start-up (it sets them when protectKernelDefaults is
# off, the default): put back afterwards. kube-proxy is told to leave conntrack and
# route_localnet alone (kubeadm.yaml).
sysctls="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet"

# --- clean-up -----------------------------------------------------------------------------------

leaks=0
leaked() { echo "cluster.sh: LEAKED: $*" >&2; leaks=$((leaks + 1)); }
kubelet_pid=""  # the kubelet supervisor's process group
pycri_pid=""    # pycri's process group
crictl_bin=""
# Kubelet flags only this script's supervisor passes: how --teardown finds a kubelet of a
# killed run (and nothing else).
kubelet_flags="--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml"
# Host paths kubeadm's pods mount with DirectoryOrCreate, or without a type (which pycri
# creates as a directory), and the kubelet's volume plugin dir: removed afterwards when this
# run made them. (kube-proxy's /run/xtables.lock stays: it is iptables' own lock file, which
# any iptables -w makes, and removing it under a holder would split the lock.)
host_paths="/lib/modules /usr/libexec/kubernetes /etc/ca-certificates /etc/pki"
host_paths="$host_paths /usr/local/share/ca-certificates /usr/share/ca-certificates"

crictl() {
  "$crictl_bin" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" --timeout 60s "$@"
}

stop_group() {  # PGID: TERM, up to 20 s, then KILL (dash's kill takes no "--")
  kill -TERM "-$1" 2>/dev/null || return 0
  i=0
  while kill -0 "-$1" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "-$1" 2>/dev/null || true
}

# The iptables and ip6tables rules that name KUBE- and were not there before the run (the
# kubelet's KUBE-FIREWALL, KUBE-KUBELET-CANARY..., kube-proxy's KUBE-SERVICES, KUBE-SVC-*...):
# the jumps from other chains, then the chains. Deleted one by one, not by restoring a saved
# ruleset, which would undo what others change meanwhile.
remove_kube_chains() {
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    "$ipt-save" 2>/dev/null | python3 -c '
import shlex, subprocess, sys
ipt, before = sys.argv[1], set(open(sys.argv[2]).read().splitlines())
table, chains, rules = "", [], []
for line in (x.strip() for x in sys.stdin):
    if line.startswith("*"):
        table = line[1:]
    elif line in before or "KUBE-" not in line:
        continue
    elif line.startswith(":KUBE-"):
        chains.append((table, line[1:].split()[0]))
    elif line.startswith("-A ") and not line.split()[1].startswith("KUBE-"):
        rules.append((table, shlex.split(line)[1:]))
for table, rule in rules:
    subprocess.run([ipt, "-w", "-t", table, "-D", *rule], check=False)
for op in ("-F", "-X"):
    for table, chain in chains:
        subprocess.run([ipt, "-w", "-t", table, op, chain], check=False)
' "$ipt" "$state/$ipt.before" 2>/dev/null
  done
}

new_kube_rules() {  # KUBE- lines of iptables-save and ip6tables-save not there before
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    "$ipt-save" 2>/dev/null | grep -e 'KUBE-' | grep -v -x -F -f "$state/$ipt.before" 2>/dev/null
  done
  return 0
}

save_iptables() {  # the KUBE- lines before the run
  for ipt in iptables ip6tables; do
    if command -v "$ipt-save" >/dev/null; then
      "$ipt-save" 2>/dev/null | grep -e 'KUBE-' | sed 's/^[[:space:]]*//' >"$state/$ipt.before"
    fi
    [ -s "$state/$ipt.before" ] || echo "# none" >"$state/$ipt.before"
  done
}

cgroup_dirs() {  # the kubelet's (cgroupRoot /) and this run's conmon cgroups, every hierarchy
  for dir in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods /sys/fs/cgroup"$conmon_cgroup" \
             /sys/fs/cgroup/*"$conmon_cgroup"; do
    [ -d "$dir" ] && echo "$dir"
  done
  return 0
}

cluster_mounts() {  # mount points below the kubelet's root and pycri's dirs
  awk -v s="$state" -v r="$runroot" '
    index($5, "/var/lib/kubelet/") == 1 || index($5, s) == 1 || index($5, r) == 1 { print $5 }
  ' /proc/self/mountinfo | sort -r
}

our_netns() {  # pinned pod netns of this run's pycri: named pycri-<pod id>, ids in its log
  [ -f "$state/pycri.log" ] || return 0
  for ns in $(ls /var/run/netns 2>/dev/null | grep '^pycri-'); do
    grep -q -F "${ns#pycri-}" "$state/pycri.log" && echo "$ns"
  done
  return 0
}

holders() {  # processes with a cwd, root or open file below PATH; "?" for those unreadable
  for p in /proc/[0-9]*; do
    if ! readlink "$p/cwd" >/dev/null 2>&1; then
      echo "${p#/proc/}? $(cat "$p/comm" 2>/dev/null)"
    elif ls -l "$p/cwd" "$p/root" "$p/fd" 2>/dev/null | grep -q -F "$1"; then
      echo "${p#/proc/} $(cat "$p/comm" 2>/dev/null)"
    fi
  done | tr '\n' ',' | head -c 400
}

start_pycri() {  # in a process group of its own; returns once it answers
  setsid "$python" -m cri serve --config "$state/pycri.conf" >>"$state/pycri.log" 2>&1 </dev/null &
  pycri_pid=$!
  i=0
  until crictl info >/dev/null 2>&1; do
    if ! kill -0 "$pycri_pid" 2>/dev/null || [ $i -ge 600 ]; then
      say "pycri did not start:"; tail -20 "$state/pycri.log" >&2; return 1
    fi
    sleep 0.1; i=$((i + 1))
  done
}

cleanup() {
  rc=$?
  trap - EXIT INT TERM HUP
  set +e
  say "tearing down"
  mkdir -p "$logs"
  before() { [ -f "$state/$1.before" ] && tr '\n' ' ' <"$state/$1.before"; }
  logs_before=$(before logs) host_paths_before=$(before host_paths)
  cni_before=$(before cni)
  if [ ! -s "$logs/pods.txt" ] && [ -f "$KUBECONFIG" ] && [ -x "${kubectl:-}" ]; then
    "$kubectl" get pods -A -o wide --request-timeout=10s >"$logs/pods.txt" 2>&1
  fi
  # 1. The kubelet first, or it would start again what kubeadm reset removes. kubeadm reset
  #    cannot stop it without systemd ("The kubelet service could not be stopped by kubeadm").
  if [ -z "$kubelet_pid" ] && [ -n "$teardown_only" ]; then
    for pid in $(pgrep -x kubelet); do
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -F -e "$kubelet_flags" &&
        kubelet_pid=$(ps -o pgid= -p "$pid" | tr -d ' ')
    done
  fi
  [ -n "$kubelet_pid" ] && stop_group "$kubelet_pid"
  # 2. kubeadm reset: the etcd data, the pods (pycri stops and removes each through the CRI),
  #    the mounts below /var/lib/kubelet, /etc/kubernetes's files, /var/lib/kubelet's files.
  if [ -z "$pycri_pid" ] && [ -n "$teardown_only" ]; then
    pycri_pid=$(pgrep -f "cri serve --config $state/pycri.conf" | head -1)
    [ -n "$pycri_pid" ] && pycri_pid=$(ps -o pgid= -p "$pycri_pid" | tr -d ' ')
    # A killed run's pycri is started again: it recovers its pods, which kubeadm reset
    # then removes through it like any other.
    if [ -z "$pycri_pid" ] && [ -f "$state/pycri.conf" ] && [ -n "$crictl_bin" ]; then
      say "starting the killed run's pycri again, to remove its pods"
      start_pycri
    fi
  fi
  pycri_up=""
  [ -n "$crictl_bin" ] && [ -S "$sock" ] && crictl version >/dev/null 2>&1 && pycri_up=1
  if [ -x "${kubeadm:-}" ] && { [ -n "$pycri_up" ] || [ -d /etc/kubernetes ]; }; then
    "$kubeadm" reset -f --cri-socket "unix://$sock" >"$logs/kubeadm-reset.log" 2>&1 ||
      say "kubeadm reset failed: see $logs/kubeadm-reset.log"
  fi
  if [ -n "$pycri_up" ]; then
    left=$(crictl pods -q 2>/dev/null)
    if [ -n "$left" ]; then
      leaked "$(echo "$left" | wc -l) pods after kubeadm reset (removed now)"
      crictl rmp -f $left >/dev/null 2>&1
    fi
    left=$(crictl ps -a -q 2>/dev/null)
    [ -n "$left" ] && leaked "containers $(echo $left)"
  fi
  # 3. pycri, and any conmon of its runroot.
  [ -n "$pycri_pid" ] && stop_group "$pycri_pid"
  [ -f "$state/pycri.log" ] && cp "$state/pycri.log" "$logs/"
  for pid in $(pgrep -f "conmon.*$runroot"); do
    leaked "conmon $pid"; kill -KILL "$pid" 2>/dev/null
  done
  # 4. Processes left in the pods' cgroups (all of this cluster: start-up refuses a host
  #    where other processes are in them), then the cgroups, which the kubelet leaves.
  for dir in $(cgroup_dirs); do
    procs=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
    if [ -n "$procs" ]; then
      leaked "processes $(echo $procs) in $dir"
      kill -KILL $procs 2>/dev/null; sleep 0.5
    fi
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  for dir in $(cgroup_dirs); do leaked "cgroup $dir (busy)"; done
  # 5. Mounts: the kubelet bind-mounts its root onto itself (to make it shared) and leaves
  #    that; below it, and in pycri's dirs and netns pins, anything left is a leak.
  for mnt in $(cluster_mounts); do
    leaked "mount $mnt"; umount -l "$mnt"
  done
  # A kubelet started by someone else meanwhile keeps its device plugin socket in
  # /var/lib/kubelet/device-plugins whatever its root dir (the path is fixed in the kubelet),
  # and a bound socket keeps the mount busy: that mount is detached lazily, and the folder
  # is left to that kubelet.
  others=$(echo $(pgrep -x kubelet))
  i=0
  while grep -q " /var/lib/kubelet " /proc/self/mountinfo; do
    umount /var/lib/kubelet 2>/dev/null && continue
    i=$((i + 1))
    if [ -n "$others" ] || [ $i -ge 20 ]; then
      if [ -n "$others" ]; then
        say "note: another kubelet ($others) uses /var/lib/kubelet/device-plugins; detached"
      else
        leaked "mount /var/lib/kubelet (busy; held by: $(holders /var/lib/kubelet))"
      fi
      umount -l /var/lib/kubelet; break
    fi
    sleep 0.5
  done
  for ns in $(our_netns); do
    leaked "netns $ns"; ip netns del "$ns"
  done
  # 6. The network: veths still on the bridge are leaks (each pod's CNI DEL removes its own);
  #    the bridge stays after the last DEL by the bridge plugin's design; the node's link.
  if [ -n "$(ip -o link show master "$bridge" 2>/dev/null)" ]; then
    leaked "veths on $bridge: $(ip -o link show master "$bridge" | awk -F': ' '{ print $2 }' | tr '\n' ' ')"
  fi
  ip link del "$bridge" 2>/dev/null
  ip link del "$node_link" 2>/dev/null
  # 7. iptables: the kubelet's and kube-proxy's KUBE-* chains, which kubeadm reset leaves
  #    ("The reset process does not perform cleanup of ... network filtering rules").
  if [ -f "$state/iptables.before" ]; then
    remove_kube_chains
    [ -n "$(new_kube_rules)" ] && leaked "iptables rules naming KUBE-: $(new_kube_rules | wc -l)"
  fi
  # iptables-nft makes a table when a chain is first added to it (the kubelet's canary chains
  # in ip6 mangle, say); one this run made that is empty again goes too. Only with nft.
  if command -v nft >/dev/null && [ -f "$state/nft.before" ]; then
    new_tables=$(nft list tables 2>/dev/null | grep -v -x -F -f "$state/nft.before" | awk '{ print $2 "/" $3 }')
    for t in $new_tables; do
      # A rule is any line but the table's and chains' heads, base-chain types and braces.
      rules=$(nft list table "${t%/*}" "${t#*/}" 2>/dev/null | grep -c -v -E \
        '^[[:space:]]*((table|chain) .*\{|type .*;|\}|#.*)?[[:space:]]*$')
      if [ "$rules" = 0 ]; then nft delete table "${t%/*}" "${t#*/}"
      else leaked "nf_tables table ${t%/*} ${t#*/} with $rules rules"
      fi
    done
    nft list ruleset 2>/dev/null | grep -q -i 'kube' && leaked "nf_tables rules naming kube"
  fi
  if iptables-save 2>/dev/null | grep -q -e "$bridge" -e "${pod_subnet%/*}"; then
    leaked "iptables rules for $bridge or $pod_subnet"
  fi
  # 8. Host settings the kubelet changed, and host paths the pods' volumes made.
  if [ -f "$state/sysctls.before" ]; then
    while read -r key value; do
      [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -q -w "$key=$value" >/dev/null
    done <"$state/sysctls.before"
  fi
  [ -f "$state/host_paths.before" ] || host_paths_before=$host_paths  # not known: none is ours
  for path in $host_paths; do
    case " $host_paths_before " in *" $path "*) continue ;; esac
    [ -d "$path" ] || continue
    find "$path" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -e "$path" ] && leaked "$path (made by the run, not empty)"
  done
  # 9. Files: what kubeadm reset leaves (the /etc/kubernetes folder, the kubelet's pod logs in
  #    /var/log/pods and /var/log/containers), and this run's state.
  if [ -f "$state/logs.before" ]; then
    for f in /var/log/pods/*_*_* /var/log/containers/*.log; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      case " $logs_before " in *" $f "*) continue ;; esac
      rm -rf "$f"
    done
  fi
  rmdir /var/log/pods /var/log/containers 2>/dev/null
  [ -f "$state/kubelet.log" ] && cp "$state/kubelet.log" "$logs/"
  rm -rf /etc/kubernetes /var/lib/etcd "$state" "$runroot"
  if [ -z "$others" ]; then
    rm -rf /var/lib/kubelet
  else
    find /var/lib/kubelet -mindepth 1 -maxdepth 1 ! -name device-plugins -exec rm -rf {} +
  fi
  rm -f "$sock"
  rmdir "$sock_dir" 2>/dev/null
  # 10. Anything still there.
  for path in /etc/kubernetes /var/lib/etcd "$state" "$runroot" "$sock"; do
    [ -e "$path" ] && leaked "$path"
  done
  if [ -z "$others" ] && [ -e /var/lib/kubelet ]; then leaked /var/lib/kubelet; fi
  if [ -f "$state/cni.before" ] && [ "$(ls /etc/cni/net.d 2>/dev/null | tr '\n' ' ')" != "$cni_before" ]; then
    leaked "/etc/cni/net.d changed: $(ls /etc/cni/net.d 2>/dev/null | tr '\n' ' ')"
  fi
  if [ "$leaks" = 0 ]; then
    say "torn down: nothing left behind"
  else
    say "torn down: $leaks left-overs found (removed where possible)"
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}

if [ -n "$teardown_only" ]; then
  kubeadm=$(PYCRI_K8S_VERSION=$k8s sh hack/k8s/build.sh kubeadm 2>/dev/null || true)
  crictl_bin=$(sh hack/tools/build.sh crictl 2>/dev/null | grep '/crictl$' || true)
  python=$repo/.venv/bin/python
  cleanup
fi

# --- before anything is changed: is the host free for a cluster? ------------------------------

refuse() { say "$*"; exit 2; }
for path in /etc/kubernetes/admin.conf /etc/kubernetes/manifests /var/lib/etcd/member "$state"; do
  [ -e "$path" ] && refuse "$path exists: a cluster (or an interrupted run) is here;" \
    "sh hack/k8s/cluster.sh --teardown removes what a run of this script left"
done
ip link show "$node_link" >/dev/null 2>&1 && refuse "interface $node_link exists (an interrupted run?): see --teardown"
[ -S "$sock" ] && refuse "$sock exists: another pycri serves it"
for port in 6443 2379 2380 10248 10249 10250 10256 10257 10259; do
  ss -Htln "sport = :$port" | grep -q . && refuse "port $port is in use (the cluster needs it)"
done
# Every kubelet keeps its device plugin socket in /var/lib/kubelet/device-plugins, whatever
# its root dir: two would share it (and kubeadm reset empties that folder).
others=$(echo $(pgrep -x kubelet))
[ -n "$others" ] && refuse "another kubelet runs on this host (pid $others): both would use" \
  "/var/lib/kubelet/device-plugins; run this when it has stopped"
for dir in /sys/fs/cgroup/*/kubepods; do
  [ -n "$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] &&
    refuse "processes in $dir: a kubelet with cgroupRoot / runs here"
done
for net in $node_ip $pod_subnet $svc_subnet; do
  ip -4 route show to match "${net%/*}" | grep -v '^default' | grep -q . &&
    refuse "$net is routed on this host already: $(ip -4 route show to match "${net%/*}" | grep -v '^default')"
done

# --- binaries, images, venv -------------------------------------------------------------------

say "binaries (hack/k8s/build.sh; builds what is missing)"
bins=$(PYCRI_K8S_VERSION=$k8s sh hack/k8s/build.sh kubeadm kubelet kubectl kube-apiserver \
  kube-controller-manager kube-scheduler kube-proxy etcd coredns)
kubeadm=$(echo "$bins" | grep '/kubeadm$')
kubectl=$(echo "$bins" | grep '/kubectl$')
k8s_dir=$(dirname "$kubeadm")
crictl_bin=$(sh hack/tools/build.sh crictl | grep '/crictl$')
# kubeadm's preflight runs `kubelet --version` from PATH.
PATH=$k8s_dir:$PATH
export PATH
sh hack/install.sh >&2
python=$repo/.venv/bin/python

# What the clean-up compares with, kept in the state dir so that --teardown has it too.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
rm -rf "$logs"
mkdir -p "$logs" "$state" "$state/cni" "$runroot" "$state/smoke"
chmod 700 "$state"
ls /etc/cni/net.d >"$state/cni.before" 2>/dev/null || true
ls -d /var/log/pods/*_*_* /var/log/containers/*.log >"$state/logs.before" 2>/dev/null || true
for path in $host_paths; do
  if [ -e "$path" ]; then echo "$path"; fi
done >"$state/host_paths.before"
save_iptables
if command -v nft >/dev/null; then nft list tables >"$state/nft.before" 2>/dev/null || true; fi
for key in $sysctls; do
  echo "$key $(sysctl -n "$key")"
done >"$state/sysctls.before"

# --- the node's network -------------------------------------------------------------------------

# The node's address on a link of its own. This kernel has no dummy driver ("ip link add ...
# type dummy": "Error: Unknown device type."), so it is a bridge without ports, which holds a
# local address as well (traffic to it never leaves the host either).
ip link add "$node_link" type bridge
ip addr add "$node_ip/32" dev "$node_link"
ip link set "$node_link" up
# The kubelet's resolvConf, which CoreDNS forwards to (its pod has dnsPolicy Default): the
# node's own address, where nothing serves DNS, so names outside the cluster fail at once and
# no query leaves the host. Not a loopback address: in CoreDNS's pod that is CoreDNS itself,
# and its loop plugin stops it ("Loop (127.0.0.1:... -> :53) detected").
echo "nameserver $node_ip" >"$state/resolv.conf"
cat >"$state/cni/10-pycri-cluster.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pycri-cluster",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$state/ipam",
              "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$pod_subnet"}]]}}
  ]
}
EOF

# --- pycri --------------------------------------------------------------------------------------

# A pull of anything the cluster names fails at once instead of trying the internet.
cat >"$state/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
prefix = "registry.k8s.io"
blocked = true
[[registry]]
prefix = "docker.io"
blocked = true
[[registry]]
prefix = "localhost"
blocked = true
EOF
cat >"$state/pycri.conf" <<EOF
[pycri]
root = "$state/pycri"
runroot = "$runroot"
log_level = "info"
[pycri.api]
listen = "$sock"
[pycri.runtime]
cgroup_driver = "cgroupfs"
conmon_cgroup = "$conmon_cgroup"
[pycri.image]
registries_conf = "$state/registries.conf"
[pycri.network]
conf_dir = "$state/cni"
plugin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
# Pods talk to each other, to services and to the node; nothing is masqueraded off the host.
masquerade_cidrs = []
[pycri.nri]
# NRI as on a node, on a socket of this run's: the host's own plugins are not the cluster's.
socket_path = "$runroot/nri.sock"
plugin_path = "$state/nri-plugins"
plugin_config_path = "$state/nri-conf"
EOF

# --- kubeadm's configuration --------------------------------------------------------------------

test_image=localhost/pycri-test/busybox:1
cat >"$state/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $node_ip
  bindPort: 6443
nodeRegistration:
  name: $(hostname | tr 'A-Z' 'a-z')
  criSocket: unix://$sock
  imagePullPolicy: Never   # the images are imported; a missing one is an error, not a pull
  # No control-plane taint: the workloads of the smoke test run on the one node.
  taints: []
  kubeletExtraArgs:
  - name: node-ip
    value: $node_ip
  ignorePreflightErrors:
  # cgroup v1 host: "cgroups v1 support is deprecated and will be removed ... you must set
  # the kubelet configuration option 'FailCgroupV1' to 'false'. You must also explicitly skip
  # this validation." (failCgroupV1 is false below).
  - SystemVerification
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $k8s
networking:
  podSubnet: $pod_subnet
  serviceSubnet: $svc_subnet
controllerManager:
  extraArgs:
  - name: node-cidr-mask-size
    value: "${pod_subnet#*/}"   # the node's podCIDR is the whole pod subnet, as the CNI config says
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false   # cgroup v1 host (see the preflight error above)
failSwapOn: false
resolvConf: $state/resolv.conf
# A small or busy test disk must not evict the control plane, nor collect its images.
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1Mi
  nodefs.inodesFree: "1"
  imagefs.available: 1Mi
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
# Leave the host's conntrack table size and timeouts as they are (kube-proxy would raise
# nf_conntrack_max and shorten two timeouts, host-wide).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  # NodePorts on 127.0.0.1 need net.ipv4.conf.all.route_localnet=1, host-wide; not needed here.
  localhostNodePorts: false
EOF

say "images (hack/k8s/images.py) into pycri's store"
refs=$("$kubeadm" config images list --config "$state/kubeadm.yaml" 2>/dev/null)
archives=$(python3 hack/k8s/images.py --cache "$(dirname "$k8s_dir")" --bin "$k8s_dir" \
  --bin "$(echo "$bins" | grep '/etcd$')" --bin "$(echo "$bins" | grep '/coredns$')" \
  $refs "$test_image")
echo "$archives" | while read -r ref archive; do
  "$python" -m cri image import --config "$state/pycri.conf" "$archive" >/dev/null
done

say "starting pycri on $sock"
start_pycri || exit 1

# --- kubeadm init, with the kubelet run here --------------------------------------------------

# The kubelet as kubeadm's systemd drop-in (10-kubeadm.conf) runs it: the bootstrap and final
# kubeconfig, the config kubeadm wrote, and the flags of kubeadm-flags.env; restarted when it
# exits (Restart=always), in a process group of its own for the clean-up.
setsid sh -c '
  while [ ! -f /var/lib/kubelet/config.yaml ]; do sleep 0.2; done
  while :; do
    KUBELET_KUBEADM_ARGS=""
    . /var/lib/kubelet/kubeadm-flags.env
    echo "cluster.sh: starting the kubelet with $KUBELET_KUBEADM_ARGS"
    "$1" --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
      --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml \
      $KUBELET_KUBEADM_ARGS
    echo "cluster.sh: the kubelet exited with $?; restarting it in 2 s"
    sleep 2
  done
' sh "$k8s_dir/kubelet" >"$state/kubelet.log" 2>&1 </dev/null &
kubelet_pid=$!

say "kubeadm init (log: $logs/kubeadm-init.log)"
if ! "$kubeadm" init --config "$state/kubeadm.yaml" >"$logs/kubeadm-init.log" 2>&1; then
  tail -30 "$logs/kubeadm-init.log" >&2
  say "kubeadm init failed"
  exit 1
fi
say "waiting for the node, kube-proxy and CoreDNS"
"$kubectl" wait --for=condition=Ready node --all --timeout=300s >&2
"$kubectl" -n kube-system rollout status daemonset/kube-proxy --timeout=300s >&2
"$kubectl" -n kube-system rollout status deployment/coredns --timeout=300s >&2

# --- the smoke test -----------------------------------------------------------------------------

run_smoke

set +e
(exit "$smoke_rc")
cleanup_rc=0
trap - EXIT
( cleanup ) || cleanup_rc=$?
wall=$(($(date +%s) - began))
echo
echo "kubectl get pods -A -o wide (at the end of the smoke test, before the teardown):"
cat "$logs/pods.txt"
echo
report_smoke
say "wall time $((wall / 60)) min $((wall % 60)) s (logs: .cache/cluster/last/)"
exit "$cleanup_rc"
