#!/usr/bin/env bash
# Memory over a long steady run of the coordinator bench: runs
# `tillswarm-bench coordinator` (a real coordinator and its load generator in
# one process) for DURATION_S seconds of open loop and samples the process's
# resident memory every 30 s. Flat memory after the warm-up is the pass mark.
# Usage: bench/scripts/soak-coordinator.sh [TILLS] [DURATION_S] [BENCH_BINARY]
set -euo pipefail
tills=${1:-100000}
duration=${2:-600}
bench=${3:-target/release/tillswarm-bench}
out=$(mktemp -d)
"$bench" coordinator --tills "$tills" --duration-s "$duration" --closed-workers 0 \
  --json "$out/report.json" >"$out/report.txt" 2>&1 &
pid=$!
start=$SECONDS
echo "t_s rss_mib"
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss" ] && echo "$((SECONDS - start)) $((rss / 1024))"
  sleep 30
done
wait "$pid"
cat "$out/report.txt"
