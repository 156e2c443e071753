#!/usr/bin/env bash
# How long attaching stops the target's threads: tests/runtime/attach.c
# with BUSY busy threads (default 16) plus a blocked, a signal-handling
# and a thread-creating one, attached to and detached from CYCLES times
# (default 10), recording 0.5 s each, twice per process. Attaching stops one thread (the one
# borrowed to load the runtime, the first time), for as long as `ftail
# record -p` reports; switching the sites on or off again goes through
# the runtime's agent and stops no thread (a thread that meets a site
# while it is being written takes one SIGTRAP detour).
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
# attach_once N: records 0.5 s from the running fixture; prints the stop.
attach_once() {
  /usr/bin/time -f "%e" -o "$tmp/wall" \
    "$FTAIL" record -p "$pid" -d "$tmp/trace" -N step --duration 0.5 2> "$tmp/err" ||
    { cat "$tmp/err"; exit 1; }
  stop=$(sed -n 's/.*stopped for \(.*\)/\1/p' "$tmp/err")
  echo "  attach $1: ${stop:+one thread stopped ${stop} to load the runtime; }ftail took $(cat "$tmp/wall") s"
}
for i in $(seq "$cycles"); do
  rm -f "$tmp/in" && mkfifo "$tmp/in"
  "$exe" "$busy" < "$tmp/in" > "$tmp/out" &
  pid=$!
  exec 3> "$tmp/in"
  until grep -q ready "$tmp/out"; do sleep 0.05; done
  echo "cycle $i (process $pid):"
  attach_once 1
  attach_once 2
  echo go >&3
  exec 3>&-
  wait "$pid" || true
  grep -q "handler ran" "$tmp/out" || { echo "the fixture's output differs: $(cat "$tmp/out")"; exit 1; }
done
echo "cores: $(nproc); busy threads: $busy; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
