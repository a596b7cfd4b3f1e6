#!/bin/sh
# Installs everything pycri and its tests need on a Debian machine (run as root): the data-plane
# tools from Debian packages, a venv with pycri in it, and a default CNI network if none exists.
# Idempotent and quiet when everything is already there.
set -eu
cd "$(dirname "$0")/.."

# runc/conmon/catatonit/CNI plugins: the data plane. iproute2/iptables: what the CNI plugins
# call. apparmor: apparmor_parser, which loads pycri's default profile where the kernel
# enforces AppArmor (a unit test compiles the profile with it elsewhere). busybox,
# docker-registry, skopeo: the tests build and serve their own images.
PKGS="runc conmon containernetworking-plugins catatonit iproute2 iptables kmod util-linux
      procps psmisc iputils-ping apparmor busybox docker-registry skopeo curl python3 python3-venv"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# python3 may come from elsewhere than Debian (a pyenv build); only its venv module matters.
if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=$(echo "$missing" | tr ' ' '\n' | grep -v -x -e python3 -e python3-venv | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
  echo "installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The venv is rebuilt when pyproject.toml changes.
stamp=.venv/.pyproject.sha
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  echo "$want" > $stamp
fi

# A default pod network (a bridge on 10.85.0.0/16, like CRI-O's packaged one), only when the
# node has no CNI config at all: an operator's config is never touched.
# Its egress NAT is one rule for the subnet, which pycri adds at start-up (masquerade_cidrs),
# not the bridge plugin's chain per pod (ipMasq), which costs ~30 ms of iptables per pod stop.
if [ -z "$(ls /etc/cni/net.d 2>/dev/null)" ]; then
  mkdir -p /etc/cni/net.d /etc/pycri/pycri.conf.d
  cp hack/cni/10-pycri-bridge.conflist /etc/cni/net.d/
  cp hack/cni/10-default-network.conf /etc/pycri/pycri.conf.d/
  echo "installed /etc/cni/net.d/10-pycri-bridge.conflist and /etc/pycri/pycri.conf.d/10-default-network.conf"
fi
