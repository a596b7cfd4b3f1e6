#!/bin/sh
# Builds Kubernetes, etcd, CoreDNS and the cri-tools at pinned releases from the Go module proxy
# (never from a copy in this repository), unless they are built already:
#
#   sh hack/k8s/build.sh [TOOL]...        (default: every tool)
#
# TOOL: kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy
#       etcd coredns critest crictl
#
# Output, outside the checkout, in ${PYCRI_K8S_CACHE:-/var/cache/pycri/k8s}:
#   kubernetes-VERSION/BIN, etcd-VERSION/etcd, coredns-VERSION/coredns
# critest and crictl come from hack/tools/build.sh (its own cache). The paths of the binaries
# asked for are printed on stdout, one per line, in the order asked; progress goes to stderr.
# A pin change builds into a new folder; an existing binary is never rebuilt.
#
# Each product is built in a small module of its own (in the cache) that requires the release
# and pins what the release leaves open: k8s.io/kubernetes requires its staging modules
# (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with its own tree, which a
# dependent module does not see, so the build module replaces each with the published
# v0.MINOR.PATCH of the same release; etcd's server module replaces its siblings with relative
# paths, so its build module requires them at the release's version instead.
# Binaries are static (CGO_ENABLED=0), so they also run in images with nothing else in them.
#
# Pins (environment): PYCRI_K8S_VERSION (v1.36.3), PYCRI_ETCD_VERSION (v3.6.8, kubeadm's etcd
# for that release), PYCRI_COREDNS_VERSION (v1.14.2, kubeadm's CoreDNS for it),
# PYCRI_CRI_TOOLS_VERSION (hack/tools/build.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
k8s=${PYCRI_K8S_VERSION:-v1.36.3}
etcd=${PYCRI_ETCD_VERSION:-v3.6.8}
coredns=${PYCRI_COREDNS_VERSION:-v1.14.2}
cache=${PYCRI_K8S_CACHE:-/var/cache/pycri/k8s}
say() { echo "k8s/build.sh: $*" >&2; }

k8s_bins="kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy"
all="kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns critest crictl"
tools=${*:-$all}
for tool in $tools; do
  case " $all " in
    *" $tool "*) ;;
    *) echo "usage: $0 [TOOL]...   TOOL: $all" >&2; exit 2 ;;
  esac
done

path_of() {
  case $1 in
    etcd) echo "$cache/etcd-$etcd/etcd" ;;
    coredns) echo "$cache/coredns-$coredns/coredns" ;;
    *) echo "$cache/kubernetes-$k8s/$1" ;;
  esac
}

# The Go on PATH builds, and fetches from the proxy the toolchain a release needs when it is
# older (GOTOOLCHAIN, Go 1.21 and later). Debian 12's golang-go (1.19) cannot do that, so it is
# no fallback: say what is missing instead.
ensure_go() {
  have=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed 's/^go//') || have=""
  if [ -z "$have" ] || [ "$(printf '1.21\n%s\n' "$have" | sort -V | head -1)" != 1.21 ]; then
    say "needs Go 1.21 or later on PATH (found: ${have:-none}); it fetches newer toolchains itself"
    exit 1
  fi
}

# A release names the Go it needs; an older local Go fetches that toolchain from the proxy.
toolchain_for() {  # go.mod of the release
  need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$1")
  have=$(GOTOOLCHAIN=local go env GOVERSION | sed 's/^go//')
  if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    say "go $have is older than the go $need that $(sed -n 's/^module //p' "$1") needs"
    echo "go$need"
  else
    echo local
  fi
}

mod_dir() {  # module@version -> its folder in the module cache (downloaded, checksum-verified)
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# A build module in DIR that requires MODULE@VERSION (plus the lines of EXTRA, a file) and has
# a go.sum for the packages PKGS: made once, then reused read-only.
build_module() {  # DIR MODULE VERSION EXTRA PKGS...
  dir=$1 module=$2 version=$3 extra=$4
  shift 4
  [ -f "$dir/.done" ] && return 0
  rm -rf "$dir"
  mkdir -p "$dir"
  src=$(mod_dir "$module@$version")
  [ -f "$src/go.mod" ] || { say "no source for $module@$version"; exit 1; }
  {
    echo "module pycri.invalid/build"
    echo
    sed -n 's/^go \([0-9.]*\)$/go \1/p' "$src/go.mod"
    echo
    echo "require $module $version"
    [ -s "$extra" ] && cat "$extra"
  } >"$dir/go.mod"
  # Each package at the release itself: a bare path would mean its latest version.
  pkgs=""
  for pkg in "$@"; do pkgs="$pkgs $pkg@$version"; done
  (cd "$dir" && GOTOOLCHAIN=$(toolchain_for "$src/go.mod") GOFLAGS=-mod=mod go get $pkgs >&2)
  touch "$dir/.done"
}

build_kubernetes() {  # BIN...
  out=$cache/kubernetes-$k8s
  dir=$out/.module
  src=$(mod_dir "k8s.io/kubernetes@$k8s")
  # The staging modules the release requires at v0.0.0, at the same release's published tag.
  staging=$(printf 'v0.%s' "${k8s#v1.}")
  extra=$out/.replace
  mkdir -p "$out"
  awk -v tag="$staging" '
    $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print "replace " $1 " => " $1 " " tag }
  ' "$src/go.mod" | sort -u >"$extra"
  # go.sum for every command, so that building one later needs no change to the module.
  every=""
  for bin in $k8s_bins; do every="$every k8s.io/kubernetes/cmd/$bin"; done
  build_module "$dir" k8s.io/kubernetes "$k8s" "$extra" $every
  pkgs=""
  for bin in "$@"; do pkgs="$pkgs k8s.io/kubernetes/cmd/$bin"; done
  major=${k8s#v}; major=${major%%.*}
  minor=${k8s#v*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  go_build "$dir" "$(toolchain_for "$src/go.mod")" "$ldflags" "$out" $pkgs
}

build_etcd() {
  out=$cache/etcd-$etcd
  src=$(mod_dir "go.etcd.io/etcd/server/v3@$etcd")
  extra=$out/.require
  mkdir -p "$out"
  # The siblings the server module replaces with relative paths, at the release's tag.
  awk '$1 == "replace" && $4 ~ /^\.\.\// { print $2 } $2 == "=>" && $3 ~ /^\.\.\// { print $1 }' \
    "$src/go.mod" | sort -u | sed "s/\$/ $etcd/; s/^/require /" >"$extra"
  build_module "$out/.module" go.etcd.io/etcd/server/v3 "$etcd" "$extra" go.etcd.io/etcd/server/v3
  go_build "$out/.module" "$(toolchain_for "$src/go.mod")" \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd}" "$out/etcd" go.etcd.io/etcd/server/v3
}

build_coredns() {
  out=$cache/coredns-$coredns
  src=$(mod_dir "github.com/coredns/coredns@$coredns")
  mkdir -p "$out"
  : >"$out/.none"
  build_module "$out/.module" github.com/coredns/coredns "$coredns" "$out/.none" github.com/coredns/coredns
  go_build "$out/.module" "$(toolchain_for "$src/go.mod")" "-s -w" "$out/coredns" github.com/coredns/coredns
}

# go build in a build module, into OUT (a folder for several packages, a file for one); the
# output appears under its final name only when complete.
go_build() {  # DIR TOOLCHAIN LDFLAGS OUT PKG...
  dir=$1 toolchain=$2 ldflags=$3 target=$4
  shift 4
  start=$(date +%s)
  say "building $* into $target (CGO_ENABLED=0, GOTOOLCHAIN=$toolchain)"
  tmp=$(mktemp -d "$cache/.build.XXXXXX")
  (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=$toolchain go build -mod=readonly -trimpath \
    -ldflags "$ldflags" -o "$tmp/" "$@")
  if [ $# = 1 ] && [ ! -d "$target" ]; then
    mv "$tmp"/* "$target"
  else
    for bin in "$tmp"/*; do mv "$bin" "$target/$(basename "$bin")"; done
  fi
  rmdir "$tmp"
  say "built $* in $(($(date +%s) - start)) s"
}

mkdir -p "$cache"
todo_k8s="" todo_etcd="" todo_coredns="" todo_cri=""
for tool in $tools; do
  case $tool in
    critest|crictl) todo_cri="$todo_cri $tool"; continue ;;
  esac
  [ -x "$(path_of "$tool")" ] && continue
  case $tool in
    etcd) todo_etcd=1 ;;
    coredns) todo_coredns=1 ;;
    *) todo_k8s="$todo_k8s $tool" ;;
  esac
done
if [ -n "$todo_k8s$todo_etcd$todo_coredns" ]; then
  ensure_go
  [ -z "$todo_k8s" ] || build_kubernetes $todo_k8s
  [ -z "$todo_etcd" ] || build_etcd
  [ -z "$todo_coredns" ] || build_coredns
fi
cri_paths=""
[ -z "$todo_cri" ] || cri_paths=$(sh "$here/../tools/build.sh" $todo_cri)
for tool in $tools; do
  case $tool in
    critest|crictl) echo "$cri_paths" | grep "/$tool\$" ;;
    *) path_of "$tool" ;;
  esac
done
