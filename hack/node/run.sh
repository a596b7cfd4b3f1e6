#!/bin/sh
# Runs one command inside the node guest (Debian 12, systemd, cgroup v2, AppArmor; README.md)
# against a checkout shared from the host, and exits with the command's exit code.
#
#   sh hack/node/run.sh [--src DIR] [--timeout SECS] [--mem MB] [--cpus N] -- COMMAND LINE
#
# The command line (words joined with spaces, like ssh) runs as root under bash --login in the
# checkout, mounted read-write at /node/src; ../shared beside it, if there, is at /node/shared
# (read-only). Its output streams to stdout. Exit codes besides the command's: 124 timeout (the
# guest is killed), 125 the guest never ran or never finished the command (the serial log's tail
# is shown), 2 bad usage. Env: PYCRI_NODE_ACCEL=kvm to try KVM, PYCRI_NODE_CACHE (see build.sh),
# PYCRI_NODE_KEEP=1 to keep the run's directory (overlay, serial log) for a look afterwards.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
timeout_s=1800
mem=4096
cpus=2
usage() {
  echo "usage: $0 [--src DIR] [--timeout SECS] [--mem MB] [--cpus N] -- COMMAND LINE" >&2
  exit 2
}
number() { case $2 in '' | *[!0-9]*) echo "$0: $1 takes a number, not '$2'" >&2; exit 2 ;; esac; }
while [ $# -gt 0 ]; do
  case $1 in
    --src) [ $# -ge 2 ] || usage; src=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || usage; number "$1" "$2"; timeout_s=$2; shift 2 ;;
    --mem) [ $# -ge 2 ] || usage; number "$1" "$2"; mem=$2; shift 2 ;;
    --cpus) [ $# -ge 2 ] || usage; number "$1" "$2"; cpus=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[ $# -gt 0 ] || usage
say() { echo "pycri-node: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root (the shares keep the guest's file owners)"; exit 2; }

missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
command -v qemu-img >/dev/null || missing="$missing qemu-utils"
if [ -n "$missing" ]; then
  say "installing$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The image, held with a shared lock for the whole run: build.sh removes no image a run holds.
image=""
for attempt in 1 2; do
  image=$(sh "$here/build.sh" --src "$src")
  exec 8<"$image/lock" && flock -s 8 && [ -f "$image/image.raw" ] && break
  image=""
done
[ -n "$image" ] || { say "no image to boot in ${image:-the cache}"; exit 125; }
touch "$image/used"
cache=$(dirname "$image")

run=$(mktemp -d "${TMPDIR:-/tmp}/pycri-node.XXXXXX")
qpid=""
tpid=""
finish() {
  rc=$?
  trap - EXIT INT TERM
  [ -z "$tpid" ] || kill "$tpid" 2>/dev/null || true
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null
    i=0
    while kill -0 "$qpid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    pkill -KILL -P "$qpid" 2>/dev/null || true
    kill -KILL "$qpid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ] && [ -s "$run/serial.log" ]; then
    mkdir -p "$cache/logs"
    log=$cache/logs/$(date +%Y%m%d-%H%M%S)-$$
    cp "$run/serial.log" "$log.serial.log"
    [ ! -f "$run/ctl/journal.log" ] || cp "$run/ctl/journal.log" "$log.journal.log"
    say "logs kept: $log.serial.log$([ ! -f "$log.journal.log" ] || echo " $log.journal.log")"
    ls -t "$cache/logs"/* 2>/dev/null | tail -n +21 | xargs rm -f
  fi
  if [ "${PYCRI_NODE_KEEP:-}" = 1 ]; then say "run directory kept: $run"; else rm -rf "$run"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir "$run/ctl"
printf '%s\n' "$*" >"$run/ctl/cmd.sh"
[ -z "${PYCRI_NODE_SRC_CACHE:-}" ] || echo "$PYCRI_NODE_SRC_CACHE" >"$run/ctl/src-cache"
qemu-img create -q -f qcow2 -b "$image/image.raw" -F raw "$run/root.qcow2"

qemu_path() { printf '%s' "$1" | sed 's/,/,,/g'; }  # a comma in a QEMU option value is doubled
share() {  # TAG DIR [readonly]
  printf ' -virtfs local,path=%s,mount_tag=%s,id=%s,security_model=passthrough,multidevs=remap%s' \
    "$(qemu_path "$2")" "$1" "$1" "${3:+,readonly=on}"
}
shares="$(share src "$src")$(share ctl "$run/ctl")"
if [ -d "$src/../shared" ]; then
  shares="$shares$(share shared "$(cd "$src/../shared" && pwd)" readonly)"
fi
case ${PYCRI_NODE_ACCEL:-tcg} in
  kvm) accel="-accel kvm -cpu host" ;;
  tcg) accel="-accel tcg,thread=multi -cpu ${PYCRI_NODE_CPU:-max}" ;;
  *) say "PYCRI_NODE_ACCEL is kvm or tcg, not '$PYCRI_NODE_ACCEL'"; exit 2 ;;
esac
# no_timer_check: under software emulation on a busy host the kernel's IO-APIC timer check can
# miss its ticks and panic ("IO-APIC + timer doesn't work"); the check is for real hardware.
append="root=/dev/vda rw console=ttyS0 quiet panic=1 mitigations=off no_timer_check systemd.unified_cgroup_hierarchy=1"

say "booting $(basename "$image") (${PYCRI_NODE_ACCEL:-tcg}, $cpus cpus, $mem MB; timeout $timeout_s s) for: $*"
start=$(date +%s)
# The word splitting of $accel and $shares is wanted (no path in them has a space: see qemu_path).
# shellcheck disable=SC2086
timeout -k 10 "$timeout_s" qemu-system-x86_64 -nodefaults -no-user-config $accel -m "$mem" \
  -smp "$cpus" -display none -no-reboot -nic none -monitor none -serial "file:$run/serial.log" \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "$append" \
  -drive "file=$(qemu_path "$run/root.qcow2"),format=qcow2,if=virtio,cache=unsafe" \
  $shares </dev/null >"$run/qemu.log" 2>&1 &
qpid=$!
# The command's output as the guest writes it (tail stops once QEMU has ended). Both are waited
# for with `wait`, which a signal interrupts (a foreground command would hold the traps back).
tail -n +1 -F -s 0.5 --pid="$qpid" "$run/ctl/output" 2>/dev/null &
tpid=$!
wait "$tpid" || true
tpid=""
qrc=0
wait "$qpid" || qrc=$?
qpid=""
took=$(($(date +%s) - start))

serial_tail() {
  echo "--- the last lines of the guest's serial log:" >&2
  tail -n 40 "$run/serial.log" >&2 2>/dev/null || true
  [ ! -s "$run/qemu.log" ] || { echo "--- qemu:" >&2; cat "$run/qemu.log" >&2; }
}
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  say "timed out after $timeout_s s: the guest was killed$([ -f "$run/ctl/output" ] || echo " before it ran the command")"
  [ -f "$run/ctl/output" ] || serial_tail
  exit 124
fi
if [ -f "$run/ctl/exit" ]; then
  rc=$(cat "$run/ctl/exit")
  say "the command exited with $rc; the guest was up for $took s ($(cat "$run/ctl/times" 2>/dev/null))"
  exit "$rc"
fi
if [ -f "$run/ctl/output" ]; then
  say "the guest stopped after $took s before the command finished (qemu exit $qrc)"
else
  say "the guest never ran the command (qemu exit $qrc after $took s): a boot failure?"
fi
serial_tail
exit 125
