#!/bin/sh
# Builds the real CRI clients from kubernetes-sigs/cri-tools at a pinned release, from the Go
# module proxy (never from a copy in this repository), unless they are built already:
#
#   sh hack/tools/build.sh [critest|crictl]...     (default: both)
#
# Output: ${PYCRI_TOOLS_CACHE:-/var/cache/pycri/tools}/cri-tools-VERSION/{critest,crictl},
# outside the checkout; the binaries' paths are printed on stdout, progress goes to stderr.
# critest comes with ginkgo beside it, from the version cri-tools pins: `critest --parallel N`
# runs the ginkgo CLI from PATH.
# They are static (CGO_ENABLED=0), so the same files run on this host and in the node guest.
# PYCRI_CRI_TOOLS_VERSION picks another release (`go list -m -versions sigs.k8s.io/cri-tools`).
set -eu
version=${PYCRI_CRI_TOOLS_VERSION:-v1.37.0}
out=${PYCRI_TOOLS_CACHE:-/var/cache/pycri/tools}/cri-tools-$version
say() { echo "build.sh: $*" >&2; }

tools=${*:-critest crictl}
for tool in $tools; do
  case $tool in
    critest|crictl) ;;
    *) echo "usage: $0 [critest|crictl]..." >&2; exit 2 ;;
  esac
done
todo=""
for tool in $tools; do
  [ -x "$out/$tool" ] || todo="$todo $tool"
  if [ "$tool" = critest ] && [ ! -x "$out/ginkgo" ]; then todo="$todo ginkgo"; fi
done
if [ -z "$todo" ]; then
  for tool in $tools; do echo "$out/$tool"; done
  exit 0
fi

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
ensure_go

src=$(go mod download -json "sigs.k8s.io/cri-tools@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -f "$src/go.mod" ] || { say "no source for sigs.k8s.io/cri-tools@$version"; exit 1; }

# The release names the Go it needs; an older local Go fetches that toolchain from the proxy.
need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")
have=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
  say "go $have is older than the go $need that cri-tools $version needs: GOTOOLCHAIN=go$need"
  export GOTOOLCHAIN=go$need
fi

# Built in the read-only module cache itself: its go.sum pins every dependency, -mod=readonly
# refuses to change that, and the build writes only the output file.
mkdir -p "$out"
trap 'rm -f "$out"/.*.$$' EXIT
export CGO_ENABLED=0
ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${version#v}"
for tool in $todo; do
  say "building $tool of cri-tools $version (CGO_ENABLED=0) into $out"
  start=$(date +%s)
  tmp=$out/.$tool.$$
  case $tool in
    critest) (cd "$src" && go test -c -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp" ./cmd/critest) ;;
    crictl) (cd "$src" && go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp" ./cmd/crictl) ;;
    ginkgo) (cd "$src" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp" github.com/onsi/ginkgo/v2/ginkgo) ;;
  esac
  mv "$tmp" "$out/$tool"
  say "built $tool in $(($(date +%s) - start)) s"
done
for tool in $tools; do echo "$out/$tool"; done
