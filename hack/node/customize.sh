#!/bin/sh
# mmdebstrap's customize hook for the node guest (run by build.sh, on the host, with the guest's
# /dev, /proc and /sys mounted): $1 = the guest's root, $2 = the pip requirements of pycri.
set -eu
root=$1
requirements=$2
here=$(cd "$(dirname "$0")" && pwd)
in_guest() { chroot "$root" "$@"; }

# The guest's own files (units, fstab, initramfs config, the runner), owned by root.
tar -C "$here/guest" --owner=0 --group=0 -cf - . | tar -C "$root" --no-overwrite-dir -xf -
mkdir -p "$root/node/src" "$root/node/shared" "$root/node/ctl"
in_guest systemctl enable --quiet pycri-node-cgroups.service pycri-node-run.service
# Nothing logs in, nothing updates itself: each run is a fresh boot from the same image. Also
# masked: what a node for pycri's tests does without (logind and the kernel modules that systemd
# loads by name for it, binfmt, pstore, fuse, configfs), each seconds of an emulated boot.
in_guest systemctl mask --quiet getty@.service serial-getty@.service getty.target \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  fstrim.timer man-db.timer systemd-tmpfiles-clean.timer \
  systemd-logind.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
  systemd-pstore.service sys-fs-fuse-connections.mount sys-kernel-config.mount \
  modprobe@drm.service modprobe@efi_pstore.service modprobe@dm_mod.service \
  modprobe@loop.service modprobe@fuse.service modprobe@configfs.service
# Debian's two profiles (lsb_release, nvidia_modprobe) confine nothing the guest runs; parsing
# them is most of apparmor.service's boot time. Disabled the way aa-disable does it.
for profile in lsb_release nvidia_modprobe; do
  [ ! -f "$root/etc/apparmor.d/$profile" ] || ln -sf "/etc/apparmor.d/$profile" "$root/etc/apparmor.d/disable/$profile"
done
in_guest passwd -dq root

# The small initrd: only the modules listed in /etc/initramfs-tools/modules.
in_guest update-initramfs -u -k all >/dev/null

# pycri's PyPI dependencies in a venv of the guest's own Python, the checkout on its sys.path.
# pip runs in the guest's root with the host's network and, for that while, the host's CA
# bundle (it may hold a proxy's CA that the host's pip trusts; pip's CA variables name that path).
in_guest python3 -m venv /opt/pycri/venv
cp "$requirements" "$root/tmp/requirements.txt"
bundle=$root/etc/ssl/certs/ca-certificates.crt
mv "$bundle" "$bundle.guest"
cp /etc/ssl/certs/ca-certificates.crt "$bundle"
env -u PIP_FIND_LINKS PIP_DISABLE_PIP_VERSION_CHECK=1 \
  chroot "$root" /opt/pycri/venv/bin/pip install -q --no-cache-dir -r /tmp/requirements.txt
mv "$bundle.guest" "$bundle"
rm -f "$root/tmp/requirements.txt"
site=$(in_guest /opt/pycri/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo /node/src >"$root$site/pycri-node-src.pth"

# The tests start their own registry when they need one.
in_guest systemctl disable --quiet docker-registry.service
