#!/usr/bin/env bash
# The exports at scale: every format of a trace of about SIZE M events
# (4 threads of bench/eventgen.c, as bench/analysis.sh makes them): wall
# time, peak RSS (/usr/bin/time), the output's size and bytes per event.
# One run each (a 100 M-event export writes gigabytes).
# Usage: bench/exports.sh [SIZE]   (millions of events, default 100;
# needs ~1.6 GB for the trace and ~7 GB for the largest output)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need /usr/bin/time
SIZE="${1:-100}"
build_ftail
gen="$WORK/eventgen"
"$FTAIL" cc gcc -O2 -o "$gen" "$ROOT/bench/eventgen.c" -lpthread
t="$WORK/trace-${SIZE}M"
calls=$((SIZE * 1000000 / 24))
if [ ! -d "$t" ]; then
  "$FTAIL" record -d "$t" --buffer-events $((1 << 25)) -- "$gen" 4 "$calls" >/dev/null 2>&1
fi
events=$("$FTAIL" info --events -d "$t" | sed -n 's/.*duration.*(\([0-9]*\) events).*/\1/p' | head -1)
echo "== ${SIZE}M: $events events ($((events / 2)) calls)"
out="$WORK/export-out"
for fmt in perfetto chrome speedscope folded flame parquet; do
  rm -rf "$out"
  case $fmt in
    perfetto) run=("$FTAIL" dump -d "$t" --perfetto -o "$out") ;;
    chrome) run=("$FTAIL" dump -d "$t" --chrome -o "$out") ;;
    speedscope) run=("$FTAIL" dump -d "$t" --speedscope -o "$out") ;;
    folded) run=("$FTAIL" dump -d "$t" --flame-graph -o "$out") ;;
    flame) run=("$FTAIL" flame -d "$t" -o "$out") ;;
    parquet) run=("$FTAIL" export -d "$t" --parquet "$out") ;;
  esac
  /usr/bin/time -o "$WORK/export-time" -f '%e %M' "${run[@]}" >/dev/null 2>&1
  read -r secs rss <"$WORK/export-time"
  bytes=$(du -sb "$out" | cut -f1)
  python3 -c "
ev=$events; s=$secs; b=$bytes
size = f'{b/1e6:.1f} MB' if b >= 1e6 else f'{b} bytes'
print(f'$fmt: {s:.1f} s, {ev/s/1e6:.1f} M events/s, peak RSS {$rss/1024:.1f} MiB, '
      f'{size}, {b/ev:.2f} bytes/event ({2*b/ev:.1f} bytes/call)')"
done
rm -rf "$out"
