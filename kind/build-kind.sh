#!/bin/sh
# Builds the kind CLI (sigs.k8s.io/kind) at a pinned release from the Go module proxy, unless it
# is built already; prints its path on stdout, progress on stderr.
#
#   sh kind/build-kind.sh
#
# Output: ${PYCRI_TOOLS_CACHE:-/var/cache/pycri/tools}/kind-VERSION/kind, static (CGO_ENABLED=0).
# PYCRI_KIND_VERSION picks another release (`go list -m -versions sigs.k8s.io/kind`).
set -eu
version=${PYCRI_KIND_VERSION:-v0.33.0}
out=${PYCRI_TOOLS_CACHE:-/var/cache/pycri/tools}/kind-$version
say() { echo "build-kind.sh: $*" >&2; }
if [ -x "$out/kind" ]; then
  echo "$out/kind"
  exit 0
fi
command -v go >/dev/null || { say "needs Go on PATH (it fetches the toolchain kind names itself)"; exit 1; }
src=$(go mod download -json "sigs.k8s.io/kind@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -f "$src/go.mod" ] || { say "no source for sigs.k8s.io/kind@$version"; exit 1; }
mkdir -p "$out"
trap 'rm -f "$out/.kind.$$"' EXIT
say "building kind $version (CGO_ENABLED=0) into $out"
start=$(date +%s)
# Built in the read-only module cache: its go.sum pins every dependency.
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/.kind.$$" .)
mv "$out/.kind.$$" "$out/kind"
say "built kind in $(($(date +%s) - start)) s"
echo "$out/kind"
