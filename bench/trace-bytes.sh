#!/usr/bin/env bash
# Bytes on disk per event of the corpus suites' traces: each test suite
# whose gcc build the corpus tests left in target/corpus/NAME-gcc runs
# under `ftail record` (every process of it, all functions, --tail=auto),
# drained (the default) and with --no-drain (every event in growing
# event files). Per trace: events recorded, bytes of the event
# data files (*.events and *.drained, their lengths), bytes per event,
# and the whole directory as `du` counts it (blocks, with every
# process's .info/.modules/.status and each thread's header page).
# The suites start hundreds of processes (a few dozen threads at most
# at once): the per-thread files weigh in as they would for a user.
# TRACE_BYTES_MODES picks the recordings: drained (the default: zstd
# while the drainer keeps up, LZ4 or stored while it is behind, those
# repacked with zstd once their thread is done), drained-zstd and
# drained-lz4 (that codec only: FTAIL_DRAIN_CODEC), no-drain. On
# standard error: how long each suite ran, how long the watcher went on
# after it (draining what was left, repacking), and the drainer's and
# repacker's counts.
# Usage: bench/trace-bytes.sh [NAMES]   (default "lua54 sqlite jq zstd zlib")
set -euo pipefail
source "$(dirname "$0")/lib.sh"
names=${1:-lua54 sqlite jq zstd zlib}
modes=${TRACE_BYTES_MODES:-drained no-drain}
build_ftail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| suite | format | events | bytes of events | bytes/event | du of the trace |"
echo "|---|---|---|---|---|---|"
for name in $names; do
  b="$ROOT/target/corpus/$name-gcc"
  if [ ! -d "$b" ]; then
    echo "no build in $b: FTAIL_CORPUS=1 cargo test --release -p ftail-cli --test corpus" >&2
    continue
  fi
  for mode in $modes; do
    opt=() codec=
    case $mode in
      drained) ;;
      drained-zstd) codec=zstd ;;
      drained-lz4) codec=lz4 ;;
      no-drain) opt=(--no-drain) ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    rm -rf "$tmp/t" "$tmp/t.old"
    # The watcher (it drains, then repacks what it drained in haste)
    # holds standard error: the pipe ends when it does, the group's
    # `date` when the suite has.
    start=$(date +%s.%N)
    { FTAIL_DRAIN_STATS=1 FTAIL_DRAIN_CODEC=$codec TEST_ONLY=1 CC=gcc "$FTAIL" record -d "$tmp/t" \
        "${opt[@]}" -- bash "$ROOT/corpus/build.sh" "$name" "$b" 2>&1 &&
        date +%s.%N >"$tmp/ended"; } | cat >"$tmp/log" ||
      { echo "$name ($mode) failed its suite traced; log:" >&2; tail -20 "$tmp/log" >&2; exit 1; }
    done_at=$(date +%s.%N)
    awk -v s="$start" -v e="$(cat "$tmp/ended")" -v d="$done_at" -v n="$name" -v m="$mode" 'BEGIN {
      printf "%s (%s): the suite ran %.1f s; the watcher ended %.1f s after it\n", n, m, e - s, d - e }' >&2
    grep -E '^ftail: (drainer|repacked)' "$tmp/log" >&2 || true
    events=$("$FTAIL" info --events -d "$tmp/t" |
      sed -n 's/.*duration .*(\([0-9]*\) events.*/\1/p' | awk '{s += $1} END {print s + 0}')
    bytes=$(find "$tmp/t" -maxdepth 1 \( -name '*.events' -o -name '*.drained' \) -printf '%s\n' |
      awk '{s += $1} END {print s + 0}')
    du=$(du -sh "$tmp/t" | cut -f1)
    awk -v n="$name" -v m="$mode" -v e="$events" -v b="$bytes" -v d="$du" 'BEGIN {
      printf "| %s | %s | %.0f | %.0f | %.2f | %s |\n", n, m, e, b, (e ? b / e : 0), d }'
  done
done
