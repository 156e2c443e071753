#!/usr/bin/env bash
# The analysis side at scale: report, replay and graph of traces of about
# 10 M and 100 M events (4 threads of bench/eventgen.c), wall time (min and
# median of RUNS runs, hyperfine) and peak RSS (/usr/bin/time): report on
# one core and on two (taskset), replay and graph writing a file, and each
# with -t at a threshold some calls pass (1us) and one none does (10s).
# Prints each view's events/s and user CPU seconds, and each -t run's
# time as a ratio to the same view unfiltered (goal: at most 1.2).
# Usage: bench/analysis.sh [RUNS]   (default 3; needs ~1.8 GB of disk)
#        SIZES="10" bench/analysis.sh   (only the 10 M-event trace)
#        THREADS=1 bench/analysis.sh    (one thread making all the events)
#        FORMAT=drained bench/analysis.sh   (traces in drained rings, the
#          record default; else growing event files, --buffer-events)
#        VIEWS="report replay" bench/analysis.sh   (only those views)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need hyperfine /usr/bin/time taskset
RUNS="${1:-3}"
SIZES="${SIZES:-10 100}"
THREADS="${THREADS:-4}"
FORMAT="${FORMAT:-growing}"
VIEWS="${VIEWS:-report report-1core report-2cores report-t1us report-t10s replay replay-t1us replay-t10s graph graph-t1us graph-t10s}"
OUT="$WORK/analysis-out.txt"
build_ftail
gen="$WORK/eventgen"
"$FTAIL" cc gcc -O2 -o "$gen" "$ROOT/bench/eventgen.c" -lpthread
for size in $SIZES; do
  # THREADS threads x N outer calls x 6 events = size M events.
  calls=$((size * 1000000 / (6 * THREADS)))
  case $FORMAT in
    growing) t="$WORK/trace-${size}M-${THREADS}t"; opt=(--buffer-events $((calls * 8))) ;;
    drained) t="$WORK/trace-${size}M-${THREADS}t-drained"; opt=() ;;
    *) echo "FORMAT is growing or drained" >&2; exit 2 ;;
  esac
  if [ ! -d "$t" ]; then
    "$FTAIL" record -d "$t" "${opt[@]}" -- "$gen" "$THREADS" "$calls" >/dev/null 2>&1
  fi
  events=$("$FTAIL" info --events -d "$t" | sed -n 's/.*duration.*(\([0-9]*\) events.*/\1/p' | head -1)
  echo "== ${size}M, $THREADS threads, $FORMAT: $events events, $(du -sh "$t" | cut -f1)"
  declare -A unfiltered=()
  for cmd in $VIEWS; do
    case $cmd in
      report) run=("$FTAIL" report -d "$t") ;;
      report-1core) run=(taskset -c 0 "$FTAIL" report -d "$t") ;;
      report-2cores) run=(taskset -c 0,1 "$FTAIL" report -d "$t") ;;
      report-t*) run=("$FTAIL" report -t "${cmd#report-t}" -d "$t") ;;
      replay) run=("$FTAIL" replay --no-pager -d "$t") ;;
      replay-t*) run=("$FTAIL" replay --no-pager -t "${cmd#replay-t}" -d "$t") ;;
      graph) run=("$FTAIL" graph -d "$t") ;;
      graph-t*) run=("$FTAIL" graph -t "${cmd#graph-t}" -d "$t") ;;
    esac
    json="$WORK/analysis-$cmd-$size.json"
    # Each run writes a fresh file with no dirty pages of the last run
    # left to flush: truncating the previous 3 GB of replay output (over
    # a second) and the kernel's writeback of it are not the view's work.
    hyperfine --runs "$RUNS" --warmup 1 --prepare "rm -f $OUT; sync" \
      --export-json "$json" "${run[*]} > $OUT" >/dev/null 2>&1
    read -r min median user < <(python3 -c "
import json,statistics; r=json.load(open('$json'))['results'][0]
print(min(r['times']), statistics.median(r['times']), r['user'])")
    view=${cmd%%-*}
    [ "$cmd" = "$view" ] && unfiltered[$view]=$min
    base=${unfiltered[$view]:-$min}
    rss=$( { /usr/bin/time -f %M "${run[@]}" >/dev/null; } 2>&1 | tail -1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "
ev=$events; mn=$min; md=$median; us=$user; base=$base
t = f', {mn/base:.2f}x unfiltered' if '$cmd' != '$view' and '-t' in '$cmd' else ''
print(f'$cmd: load $load, min {mn:.2f} s, median {md:.2f} s, user {us:.2f} s, '
      f'{ev/mn/1e6:.1f} M events/s (min){t}, peak RSS {int($rss)/1024:.1f} MiB')"
  done
done
