#!/bin/sh
# Builds kind/base/'s stand-in for kindest/node into the Docker that DOCKER_HOST names, for
# machines that cannot pull kindest/node; prints the image's tag on stdout, progress on stderr.
#
#   sh kind/base/build.sh
#
# 1. A Debian 12 root file system by mmdebstrap from the host's apt sources (cached as
#    ${PYCRI_KIND_CACHE:-/var/cache/pycri/kind}/rootfs-HASH.tar, HASH of the package list and
#    the sources), imported with `docker import`: systemd and what a kind node has (iptables,
#    iproute2, conntrack, mount...), plus pycri's Debian packages, which kind/Dockerfile would
#    otherwise fetch with apt (a build here has no network).
# 2. This folder's Dockerfile on it, with kubelet, kubeadm and kubectl of hack/k8s/build.sh and
#    crictl of hack/tools/build.sh: pycri-kind-base:K8S_VERSION.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
k8s=${PYCRI_K8S_VERSION:-v1.36.3}
cache=${PYCRI_KIND_CACHE:-/var/cache/pycri/kind}
say() { echo "kind/base/build.sh: $*" >&2; }

packages="systemd systemd-sysv dbus iptables iproute2 kmod procps util-linux mount conntrack
  ethtool ca-certificates runc conmon containernetworking-plugins catatonit python3 python3-venv"
sources=$(mktemp)
trap 'rm -f "$sources"' EXIT
python3 "$repo/hack/node/recipe.py" sources /etc/apt/sources.list /etc/apt/sources.list.d/* >"$sources"
hash=$( (echo $packages; cat "$sources") | sha256sum | cut -c1-16)
rootfs=$cache/rootfs-$hash.tar
if [ ! -f "$rootfs" ]; then
  command -v mmdebstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  }
  mkdir -p "$cache"
  say "mmdebstrap: Debian 12 with systemd into $rootfs (about a minute)"
  start=$(date +%s)
  mmdebstrap --quiet --variant=apt --mode=root --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include="$(echo $packages | tr ' ' ,)" bookworm "$rootfs.tmp" "$sources" >&2
  mv "$rootfs.tmp" "$rootfs"
  say "rootfs built in $(($(date +%s) - start)) s"
  # Older rootfs tars (another package list or mirror) go.
  for old in "$cache"/rootfs-*.tar; do [ "$old" = "$rootfs" ] || rm -f "$old"; done
fi
rootfs_image=pycri-kind-rootfs:$hash
if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
  say "docker import $rootfs_image"
  docker import "$rootfs" "$rootfs_image" >/dev/null
fi

bins=$(PYCRI_K8S_VERSION=$k8s sh "$repo/hack/k8s/build.sh" kubelet kubeadm kubectl)
crictl=$(sh "$repo/hack/tools/build.sh" crictl)
ctx=$repo/.cache/kind/base-context
rm -rf "$ctx"
mkdir -p "$ctx/bin"
cp "$here/Dockerfile" "$here/entrypoint" "$here/kubelet.service" "$here/kubelet-cgroup-root" "$ctx/"
for bin in $bins $crictl; do
  ln "$bin" "$ctx/bin/" 2>/dev/null || cp "$bin" "$ctx/bin/"
done
echo "$k8s" >"$ctx/version"
tag=pycri-kind-base:$k8s
say "docker build $tag"
docker build -q --build-arg "ROOTFS=$rootfs_image" -t "$tag" "$ctx" >&2
echo "$tag"
