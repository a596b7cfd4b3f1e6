# Sourced (`. hack/lib/teardown-option.sh`) by the scripts that run a whole scenario and can
# also just tear one down: it reads the script's one argument and sets teardown_only.
#   --teardown   teardown_only=1 (the clean-up alone, after a killed run)
#   -h, --help   prints the script's header comment (up to `set -eu`) and exits
#   anything else: usage on stderr, exit 2
teardown_only=""
case ${1:-} in
  --teardown) teardown_only=1 ;;
  -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--teardown]" >&2; exit 2 ;;
esac
