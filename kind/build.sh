#!/bin/sh
# Builds the kind node image whose runtime is pycri (kind/Dockerfile) from this checkout.
#
#   sh kind/build.sh [--base IMAGE] [--tag TAG] [--offline] [--image ARCHIVE]...
#
#   --base IMAGE     the kind node image to build on (default: the Dockerfile's kindest/node)
#   --tag TAG        the image's name (default: pycri-kind-node:latest)
#   --offline        for a Docker whose builds have no network: the wheels of pycri's
#                    dependencies are made here (this machine's pip; its Python must be the
#                    base's, 3.11 for Debian 12) and the build installs from them only
#   --image ARCHIVE  an image archive (OCI layout or docker-archive tar) the node imports into
#                    pycri's store at first boot, besides those of a kindest/node base
#
# Needs docker (DOCKER_HOST is honoured) and python3 with pip. The build context is staged in
# .cache/kind/context/ of the checkout. Progress goes to stderr; prints the tag.
set -eu
cd "$(dirname "$0")/.."
repo=$(pwd)
base=""
tag=pycri-kind-node:latest
offline=""
images=""
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --offline) offline=1; shift ;;
    --image) images="$images $2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--base IMAGE] [--tag TAG] [--offline] [--image ARCHIVE]..." >&2; exit 2 ;;
  esac
done
say() { echo "kind/build.sh: $*" >&2; }

ctx=$repo/.cache/kind/context
rm -rf "$ctx"
mkdir -p "$ctx/wheels" "$ctx/images" "$ctx/node/etc/systemd/system"
cp -R kind/node/. "$ctx/node/"
cp contrib/systemd/pycri.service "$ctx/node/etc/systemd/system/"
for archive in $images; do
  ln "$archive" "$ctx/images/" 2>/dev/null || cp "$archive" "$ctx/images/"
done

# The wheel is built from a copy of the checkout's files (tracked ones, as they are now), so
# that setuptools' build/ and egg-info land there and not in the checkout.
python=python3
[ -x .venv/bin/python ] && python=$repo/.venv/bin/python
mkdir -p "$ctx/src"
git ls-files -z | tar --null -T - -cf - | tar -C "$ctx/src" -xf -
if [ -n "$offline" ]; then
  say "wheels of pycri and its dependencies (pip wheel)"
  (cd "$ctx/src" && "$python" -m pip wheel -q -w "$ctx/wheels" .) >&2
  : >"$ctx/wheels/OFFLINE"
else
  say "pycri's wheel (pip wheel --no-deps)"
  (cd "$ctx/src" && "$python" -m pip wheel -q --no-deps -w "$ctx/wheels" .) >&2
fi
rm -rf "$ctx/src"

say "docker build -t $tag ${base:+(base $base)}"
docker build -q -f kind/Dockerfile ${base:+--build-arg "BASE=$base"} -t "$tag" "$ctx" >&2
echo "$tag"
