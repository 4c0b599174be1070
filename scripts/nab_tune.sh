#!/usr/bin/env bash
# How `algorithm: auto` was chosen, reproducibly (see ARCHITECTURE.md, "Detection
# quality"): a grid over the sequence detector's settings, each read through the
# anomaly likelihood with the band alarm (what auto is), scored with `closedloop nab`.
#
# 1. Tuning: each configuration's thresholds are swept on artificialNoAnomaly,
#    artificialWithAnomaly and realAWSCloudwatch only; the best standard score there
#    picks the configuration, and realKnownCause (never used for the choice) is
#    scored at the tuned thresholds.
# 2. Leave-one-category-out cross-validation of that whole procedure: for each of
#    the four categories, pick the configuration (and thresholds) on the other three,
#    score the held-out one, and normalise the summed held-out raw scores.
#
# Usage: scripts/nab_tune.sh [path/to/closedloop]   (default target/release/closedloop)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/closedloop}
N=testdata/nab
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }

BINS="8 10 12 16"
BLOCKS="12 24 36 48 72 96"
WARMUPS="300 600"
CATEGORIES="artificialNoAnomaly artificialWithAnomaly realAWSCloudwatch realKnownCause"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# one line per (config, held-out category, profile):
# config category profile tuning_score heldout_raw heldout_score full_score
for b in $BINS; do for k in $BLOCKS; do for w in $WARMUPS; do
  cfg="bins=$b,block=$k,warmup=$w"
  for c in $CATEGORIES; do
    "$BIN" nab --data "$N/data" --labels "$N/combined_windows.json" \
      --detector sequence --param likelihood=true --param band_alarm=true \
      --param bins="$b" --param block="$k" --param warmup="$w" --holdout "$c" \
      > "$TMP/run.txt"
    full=$(awk '/^nab:/ { split($2, a, "="); print a[2] }' "$TMP/run.txt")
    awk -v cfg="$cfg" -v full="$full" '
      /^holdout / {
        profile = $3; sub(":", "", profile)
        match($0, /other categories: [-0-9.]+/); tune = substr($0, RSTART + 18, RLENGTH - 18)
        match($0, /held-out raw=[-0-9.]+/); raw = substr($0, RSTART + 13, RLENGTH - 13)
        match($0, /score=[-0-9.]+$/); held = substr($0, RSTART + 6)
        print cfg, $2, profile, tune, raw, held, full
      }' "$TMP/run.txt" >> "$TMP/all.txt"
  done
done; done; done

echo "== tuning on artificialNoAnomaly, artificialWithAnomaly, realAWSCloudwatch (standard)"
sort -k4,4gr <(awk '$2 == "realKnownCause" && $3 == "standard"' "$TMP/all.txt") | sed -n 1,5p |
  awk '{ printf "%-30s tuning=%s realKnownCause held-out=%s all files (swept)=%s\n", $1, $4, $6, $7 }'

echo "== leave-one-category-out cross-validation of the choice"
for p in standard reward_low_FP_rate reward_low_FN_rate; do
  total=0
  for c in $CATEGORIES; do
    best=$(awk -v c="$c" -v p="$p" '$2 == c && $3 == p' "$TMP/all.txt" | sort -k4,4gr | sed -n 1p)
    echo "  $p: held out $c: chose $(echo "$best" | awk '{ print $1 " (tuning " $4 "), held-out raw " $5 }')"
    total=$(awk -v t="$total" -v r="$(echo "$best" | awk '{ print $5 }')" 'BEGIN { print t + r }')
  done
  # 55 windows: null = -fn*55, perfect = 55
  fnw=1; [ "$p" = reward_low_FN_rate ] && fnw=2
  awk -v s="$total" -v f="$fnw" -v p="$p" \
    'BEGIN { printf "cv %s: %.2f (summed held-out raw %.3f)\n", p, 100 * (s + f * 55) / (55 + f * 55), s }'
done
echo "== configurations scoring >= 60 standard on all files (swept), of $(awk '$2 == "realKnownCause" && $3 == "standard"' "$TMP/all.txt" | wc -l)"
awk '$2 == "realKnownCause" && $3 == "standard" && $7 >= 60' "$TMP/all.txt" | wc -l
