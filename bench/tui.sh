#!/usr/bin/env bash
# ftail tui on a large trace, driven under tmux as a person would: the
# time to the first screen of the timeline, to the end of its indexing,
# the time each key takes (sent with send-keys, until the screen shows its
# answer: tmux's own round trips included), and the viewer's peak RSS.
# The trace is bench/eventgen.c's, SIZE M events in THREADS threads
# (default 100 M in 1: the timeline indexes one thread, so one thread
# holding every event is the largest timeline).
# Usage: bench/tui.sh            (needs ~4.5 GB of disk at 100 M)
#        SIZE=10 THREADS=4 bench/tui.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need tmux
SIZE="${SIZE:-100}"
THREADS="${THREADS:-1}"
build_ftail
gen="$WORK/eventgen"
"$FTAIL" cc gcc -O2 -o "$gen" "$ROOT/bench/eventgen.c" -lpthread
t="$WORK/trace-tui-${SIZE}M-${THREADS}t"
# THREADS x N outer calls x 6 events = SIZE M events.
calls=$((SIZE * 1000000 / 6 / THREADS))
if [ ! -d "$t" ]; then
  "$FTAIL" record -d "$t" --buffer-events $((1 << 27)) -- "$gen" "$THREADS" "$calls" >/dev/null 2>&1
fi
events=$("$FTAIL" info --events -d "$t" | sed -n 's/.*duration.*(\([0-9]*\) events.*/\1/p' | head -1)
echo "== ${SIZE}M in $THREADS thread(s): $events events; load $(cut -d' ' -f1 /proc/loadavg)"

sock="$WORK/tui-bench.sock"
pidfile="$WORK/tui-bench.pid"
tm() { tmux -f /dev/null -S "$sock" "$@"; }
trap 'tm kill-server 2>/dev/null || true' EXIT
now() { date +%s%N; }
screen() { tm capture-pane -p; }
# wait_for TEXT: polls the screen until it shows TEXT (60 s at most).
wait_for() {
  local end=$(($(now) + 60000000000))
  until screen | grep -qF -- "$1"; do
    [ "$(now)" -lt "$end" ] || { echo "waited for '$1':" >&2; screen >&2; exit 1; }
  done
}
# key LABEL TEXT KEYS...: sends KEYS, the time until the screen shows TEXT.
key() {
  local label=$1 text=$2
  shift 2
  local t0
  t0=$(now)
  tm send-keys "$@"
  wait_for "$text"
  printf '%-44s %6.1f ms\n' "$label" "$(( $(now) - t0 ))e-6"
}
# typed TEXT: types TEXT at a prompt (not timed).
typed() {
  tm send-keys -l -- "$1"
  sleep 0.2
}

start=$(now)
tm new-session -d -x 160 -y 50 "sh -c 'echo \$\$ > $pidfile; exec $FTAIL tui -d $t'; sleep 600"
tm send-keys 2
wait_for "outer() {"
printf '%-44s %6.1f ms\n' "first screen of the timeline" "$(( $(now) - start ))e-6"
until screen | tail -1 | grep -q ' lines' && ! screen | tail -1 | grep -q indexing; do
  sleep 0.05
done
printf '%-44s %6.2f s\n' "timeline indexed" "$(( $(now) - start ))e-9"
screen | tail -1
sleep 1
# Every call of run, outer's caller, is on the thread's first line: these
# searches cross every block of the index.
tm send-keys /
typed nosuch
key "/nosuch Enter: no such function" "/nosuch: not found" Enter
key "End" "} /* run */" End
key "u on the last line: outermost" "outermost call" u
key "Up, u: the caller of the last outer, run" "run() {" Up u
tm send-keys /
typed run
key "/run Enter from run: none later (all blocks)" "/run: not found" Enter
key "End" "} /* run */" End
key "N: back to run (all blocks)" "run() {" N
key "> on run: none later (all blocks)" "no later call of it" ">"
key "Down x3, m: the slowest leaf" "the slowest call" Down Down Down m
key "n from leaf: no later run (all blocks)" "/run: not found" n
pid=$(cat "$pidfile")
grep -E 'VmHWM|VmRSS' "/proc/$pid/status" | tr -s ' \t' ' ' | sed 's/^/peak and current: /'
tm send-keys q
