#!/bin/sh
# Builds the node guest's image (Debian 12 from Debian's packages, see README.md) unless the
# cache already has the one for this recipe; prints the image's directory on stdout.
#
#   sh hack/node/build.sh [--src CHECKOUT]
#
# The recipe is this folder's build files (build.sh customize.sh recipe.py guest/) and the
# pyproject.toml of CHECKOUT (default: this checkout), whose PyPI dependencies go into the
# image. Cache: ${PYCRI_NODE_CACHE:-/var/cache/pycri/node}/<recipe hash>/ with image.raw,
# vmlinuz and initrd.img. Progress goes to stderr.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
while [ $# -gt 0 ]; do
  case $1 in
    --src) src=$(cd "$2" && pwd); shift 2 ;;
    *) echo "usage: $0 [--src CHECKOUT]" >&2; exit 2 ;;
  esac
done
cache=${PYCRI_NODE_CACHE:-/var/cache/pycri/node}
say() { echo "pycri-node: $*" >&2; }

recipe_hash() {
  (cd "$here" && find build.sh customize.sh recipe.py guest -type f | LC_ALL=C sort | xargs sha256sum
   sha256sum <"$src/pyproject.toml") | sha256sum | cut -c1-16
}
hash=$(recipe_hash)
dir=$cache/$hash
if [ -f "$dir/image.raw" ]; then
  echo "$dir"
  exit 0
fi

# Host tools, installed quietly when missing.
missing=""
for tool in mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs flock:util-linux python3:python3; do
  command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
  say "installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$dir/image.raw" ]; then  # built by another run while this one waited
  echo "$dir"
  exit 0
fi

say "building the image for recipe $hash in $cache (a few minutes)"
start=$(date +%s)
# Left-overs of interrupted builds (no build runs while the lock is held).
rm -rf "$cache"/.build-*
tmp=$cache/.build-$hash
mkdir -p "$tmp"
python3 "$here/recipe.py" requirements "$src/pyproject.toml" >"$tmp/requirements.txt"
# The host's own Debian mirror (whatever apt uses here), never a name written in the repo.
python3 "$here/recipe.py" sources /etc/apt/sources.list /etc/apt/sources.list.d/* >"$tmp/debian.sources"

# What a node needs: systemd as init, the kernel, pycri's data plane (runc, conmon, CNI plugins,
# catatonit, iptables), what its tests use (busybox, docker-registry, skopeo, curl, openssl,
# zstd), AppArmor (with sudo: critest loads its profiles through both).
packages="systemd systemd-sysv udev dbus linux-image-amd64 initramfs-tools iproute2 iptables kmod
  procps util-linux psmisc iputils-ping python3 python3-venv runc conmon containernetworking-plugins
  catatonit busybox docker-registry skopeo curl openssl zstd ca-certificates netbase apparmor
  apparmor-utils sudo"
mmdebstrap --variant=apt --mode=root --format=directory \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --setup-hook="mkdir -p \"\$1/etc/initramfs-tools/conf.d\" && cp '$here/guest/etc/initramfs-tools/conf.d/pycri-node' \"\$1/etc/initramfs-tools/conf.d/\"" \
  --include="$(echo $packages | tr ' ' ,)" \
  --customize-hook="sh '$here/customize.sh' \"\$1\" '$tmp/requirements.txt'" \
  bookworm "$tmp/root" "$tmp/debian.sources"

# mmdebstrap leaves an empty machine-id (systemd would make a new one at each boot) and the
# host's resolv.conf (the guest has no network to the outside).
cat /proc/sys/kernel/random/uuid | tr -d - >"$tmp/root/etc/machine-id"
rm -f "$tmp/root/etc/resolv.conf"
kver=$(ls "$tmp/root/lib/modules")
cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$tmp/root/boot/initrd.img-$kver" "$tmp/initrd.img"
# A sparse 8 GiB file system made from the directory (no loop mount): each run writes to its
# own qcow2 overlay of it.
truncate -s 8G "$tmp/image.raw"
mkfs.ext4 -q -F -L pycri-node -d "$tmp/root" "$tmp/image.raw"
rm -rf "$tmp/root"
echo "$kver" >"$tmp/kernel-version"
: >"$tmp/lock"
mv "$tmp" "$dir"
say "built $dir in $(($(date +%s) - start)) s"

# Older recipes go, unless a run holds one (run.sh keeps a shared lock on it) or one was used
# in the last hour (another checkout with another pyproject.toml may be using it).
for old in "$cache"/*; do
  case ${old##*/} in
    "$hash") continue ;;
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) ;;
    *) continue ;;
  esac
  [ -n "$(find "$old" -maxdepth 1 -name used -mmin -60)" ] && continue
  if flock -n -x "$old/lock" true 2>/dev/null; then
    rm -rf "$old"
    say "removed the image of an older recipe: $old"
  fi
done
echo "$dir"
