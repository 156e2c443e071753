#!/usr/bin/env bash
# How long attaching and detaching keep the target's threads from their
# code: tests/runtime/attach.c with BUSY busy threads (default 16) plus a
# blocked, a signal-handling and a thread-creating one, attached to and
# detached from twice per process (the first attach loads the runtime,
# borrowing one thread; the second goes through the runtime's agent),
# CYCLES processes (default 10), recording 0.5 s each time.
#
# The fixture's busy threads note the longest time between two of their
# calls of `work` (a time-stamp counter read, no library call); the
# script reads it back for each window: while `ftail record -p` attaches
# (until it says it records), while it records, while it detaches (from
# Ctrl-C to its exit), and over an idle window of the same length
# without ftail. That is the longest stop of any busy thread, whichever
# stopped it: ptrace, a SIGTRAP detour at a site being written, or the
# scheduler — on an oversubscribed machine the idle window shows what
# waiting for a CPU alone costs. `ftail record -p` also reports how long
# it kept the borrowed thread (wall time from its stop to its release,
# and the processor time it ran in between), and, with
# FTAIL_ATTACH_STEPS=1, each step of that; the script prints both per
# first attach, and their minimum, median and maximum at the end.
# The fixture runs in a session of its own, as a server started
# elsewhere does: with the kernel's autogroup scheduling (the default on
# desktop and many server kernels) each session shares the CPU as one
# group, so a fixture in the script's own session would make `ftail
# record` compete with its 16 busy threads one to one, which no user
# attaching from a terminal sees. SHARED_SESSION=1 keeps the fixture in
# the script's session (the worst case).
# Usage: bench/attach.sh [BUSY] [CYCLES]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
busy=${1:-16}
cycles=${2:-10}
need gcc
build_ftail
exe="$WORK/attach-fixture"
"$FTAIL" cc gcc -O2 -o "$exe" "$ROOT/tests/runtime/attach.c" -lpthread
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# gap: the longest gap of any busy thread since the last call, in us.
gap() {
  local n
  n=$(grep -c "longest gap" "$tmp/out" || true)
  echo gap >&3
  until [ "$(grep -c "longest gap" "$tmp/out" || true)" -gt "$n" ]; do sleep 0.01; done
  grep "longest gap" "$tmp/out" | tail -1 | sed 's/longest gap \([0-9]*\) us/\1/'
}
# ms US: microseconds as milliseconds.
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
worst_attach=0 worst_detach=0 worst_idle=0
kept=() ran=()
# window N: one attach, 0.5 s of recording and a detach of the fixture.
window() {
  gap > /dev/null
  "$FTAIL" record -p "$pid" -d "$tmp/trace" -N step 2> "$tmp/err" &
  local rec=$!
  until grep -q "ftail: recording process" "$tmp/err"; do
    kill -0 "$rec" 2> /dev/null || { cat "$tmp/err"; exit 1; }
    sleep 0.005
  done
  local attach recording detach idle
  attach=$(gap)
  sleep 0.5
  recording=$(gap)
  kill -INT "$rec"
  wait "$rec" || { cat "$tmp/err"; exit 1; }
  detach=$(gap)
  sleep 0.5
  idle=$(gap)
  local stop
  stop=$(sed -n 's/.*stopped for \(.*\)/\1/p' "$tmp/err")
  sed -n 's/^ftail: attach steps/    steps/p' "$tmp/err"
  echo "  attach $1: longest stop of a busy thread $(ms "$attach") attaching," \
    "$(ms "$recording") recording, $(ms "$detach") detaching; $(ms "$idle") in 0.5 s idle${stop:+;}" \
    "${stop:+the borrowed thread was kept ${stop}}"
  local k r
  k=$(sed -n 's/.*stopped for \([0-9.]*\) ms.*/\1/p' "$tmp/err")
  r=$(sed -n 's/.*stopped for .*, \([0-9.]*\) ms of it running.*/\1/p' "$tmp/err")
  [ -n "$k" ] && kept+=("$k")
  [ -n "$r" ] && ran+=("$r")
  ((attach > worst_attach)) && worst_attach=$attach
  ((detach > worst_detach)) && worst_detach=$detach
  ((idle > worst_idle)) && worst_idle=$idle
  return 0
}
for i in $(seq "$cycles"); do
  rm -f "$tmp/in" && mkfifo "$tmp/in"
  if [ -n "${SHARED_SESSION:-}" ]; then
    "$exe" "$busy" < "$tmp/in" > "$tmp/out" &
  else
    # setsid execs the fixture in place (a background job here is no
    # group leader), so $! is the fixture's pid.
    setsid "$exe" "$busy" < "$tmp/in" > "$tmp/out" &
  fi
  pid=$!
  exec 3> "$tmp/in"
  until grep -q ready "$tmp/out"; do sleep 0.05; done
  echo "cycle $i (process $pid):"
  window 1
  window 2
  echo go >&3
  exec 3>&-
  wait "$pid" || true
  grep -q "handler ran" "$tmp/out" || { echo "the fixture's output differs: $(cat "$tmp/out")"; exit 1; }
done
echo "longest stop of any busy thread: $(ms "$worst_attach") attaching," \
  "$(ms "$worst_detach") detaching, $(ms "$worst_idle") idle"
# spread VALUES...: minimum, median and maximum, in ms.
spread() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR) printf "min %.2f / median %.2f / max %.2f ms (%d attaches)", v[1], v[int((NR + 1) / 2)], v[NR], NR }'
}
echo "borrowed thread kept: $(spread "${kept[@]}"); of it running: $(spread "${ran[@]}")"
echo "cores: $(nproc); busy threads: $busy; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
