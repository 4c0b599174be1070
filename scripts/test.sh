#!/usr/bin/env bash
# The test command: installs the real peers the tests start (Debian packages), then
# runs the whole suite with rustfmt and clippy checks. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package
declare -A peers=(
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/prometheus-alertmanager]=prometheus-alertmanager
  [/usr/bin/redis-server]=redis-server
  [/usr/bin/victoria-metrics]=victoria-metrics
)
missing=()
for bin in "${!peers[@]}"; do
  [ -x "$bin" ] || missing+=("${peers[$bin]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

# Run every test binary, then close with one line of totals over all of them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, g }' "$log"
exit "$status"
