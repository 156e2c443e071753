#!/usr/bin/env bash
# The analysis side at scale: report, replay and graph of traces of about
# 10 M and 100 M events (4 threads of bench/eventgen.c), wall time (min and
# median of RUNS runs, hyperfine) and peak RSS (/usr/bin/time).
# Usage: bench/analysis.sh [RUNS]   (default 3; needs ~1.8 GB of disk)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need hyperfine /usr/bin/time
RUNS="${1:-3}"
build_ftail
gen="$WORK/eventgen"
"$FTAIL" cc gcc -O2 -o "$gen" "$ROOT/bench/eventgen.c" -lpthread
for size in 10 100; do
  t="$WORK/trace-${size}M"
  # 4 threads x N outer calls x 6 events = size M events.
  calls=$((size * 1000000 / 24))
  if [ ! -d "$t" ]; then
    "$FTAIL" record -d "$t" --buffer-events $((1 << 25)) -- "$gen" 4 "$calls" >/dev/null 2>&1
  fi
  events=$("$FTAIL" info --events -d "$t" | sed -n 's/.*duration.*(\([0-9]*\) events).*/\1/p' | head -1)
  echo "== ${size}M: $events events"
  for cmd in "report" "report-1core" "replay" "graph"; do
    case $cmd in
      report) run=("$FTAIL" report -d "$t") ;;
      report-1core) run=(env RAYON_NUM_THREADS=1 "$FTAIL" report -d "$t") ;;
      replay) run=("$FTAIL" replay --no-pager -d "$t") ;;
      graph) run=("$FTAIL" graph -d "$t") ;;
    esac
    json="$WORK/analysis-$cmd-$size.json"
    hyperfine --runs "$RUNS" --warmup 1 --export-json "$json" "${run[*]} > /dev/null" >/dev/null 2>&1
    read -r min median < <(python3 -c "
import json,statistics; r=json.load(open('$json'))['results'][0]['times']
print(min(r), statistics.median(r))")
    rss=$( { /usr/bin/time -f %M "${run[@]}" >/dev/null; } 2>&1 | tail -1)
    python3 -c "
ev=$events; mn=$min; md=$median
print(f'$cmd: min {mn:.2f} s, median {md:.2f} s, {ev/mn/1e6:.1f} M events/s (min), peak RSS {int($rss)/1024:.1f} MiB')"
  done
done
