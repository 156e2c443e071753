#!/usr/bin/env bash
# Per-event cost of tracing on a call-heavy loop (10 M calls of a tiny
# function = 20 M events), against a baseline and the floor measured in the
# same run: keeping every event (the default) and in a 1 MiB flight-recorder
# ring (--ring 1M), and past a full buffer (--buffer-events: events
# counted as lost). hyperfine min/median of RUNS runs each; prints a table,
# the bytes per event a recording keeps (`ftail info`) and the instructions
# an untraced call adds (callgrind, 1 M calls).
# Usage: bench/event-cost.sh [RUNS] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-5}
n=${2:-10000000}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --quiet -p ftail-cli -p ftail-runtime
ftail="$PWD/target/release/ftail"
work="$PWD/target/bench/event"
mkdir -p "$work"
"$ftail" cc gcc -O2 -o "$work/hotloop" bench/hotloop.c
gcc -O2 -o "$work/hotloop-plain" bench/hotloop.c
cd "$work"
hyperfine --style basic --runs "$runs" --warmup 1 --export-json event.json \
  --prepare "$(after_watchers trace); rm -rf trace trace.old" \
  "./hotloop-plain $n" \
  "./hotloop $n" \
  "./hotloop-plain $n floor" \
  "./hotloop-plain $n file" \
  "$ftail record -d trace --tail mark -- ./hotloop $n" \
  "$ftail record -d trace --tail convert -- ./hotloop $n" \
  "$ftail record -d trace --ring 1M --tail mark -- ./hotloop $n" \
  "$ftail record -d trace --buffer-events 262144 --tail mark -- ./hotloop $n" \
  >/dev/null 2>&1
# What a recording keeps: events and bytes, from `ftail info`.
rm -rf bytes bytes.old
"$ftail" record -d bytes --tail mark -- ./hotloop "$n" >/dev/null 2>&1
info=$("$ftail" info --events -d bytes)
kept=$(grep -m1 'duration' <<<"$info")
# Instructions an untraced call costs, from callgrind (1 M calls).
ins() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'; }
ip=$(ins ./hotloop-plain 1000000)
ii=$(ins ./hotloop 1000000)
python3 - "$n" "$kept" "$ip" "$ii" <<'PY'
import json, re, statistics, sys
n, kept, ip, ii = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = json.load(open("event.json"))["results"]
name = ["plain -O2 build", "instrumented, untraced", "floor (rdtsc + 16-byte store per event, cache-resident buffer)",
        "floor into a fresh file-backed mapping (every event kept)",
        "ftail record --tail=mark (every event kept)", "ftail record --tail=convert (every event kept)",
        "ftail record --ring 1M --tail=mark (flight recorder)",
        "ftail record --buffer-events 262144 --tail=mark (2 MiB kept, the rest lost)"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
ev = 2 * n
print("| run | min | median | ns per event over plain (min / median) |")
print("|---|---|---|---|")
for i, (mn, md) in enumerate(t):
    extra = "" if i == 0 else f"{(mn - t[0][0]) / ev * 1e9:.2f} / {(md - t[0][1]) / ev * 1e9:.2f}"
    print(f"| {name[i]} | {mn*1e3:.1f} ms | {md*1e3:.1f} ms | {extra} |")
floor = (t[2][0] - t[0][0]) / ev
file_floor = (t[3][0] - t[0][0]) / ev
ours = (t[4][0] - t[0][0]) / ev
ring = (t[6][0] - t[0][0]) / ev
m = re.search(r"\(([0-9]+) events, (.*) of them: ([0-9.]+) bytes each\)", kept)
print(f"\nrecorded events: {m.group(1)} (expected {ev} + a few), {m.group(2)}: {m.group(3)} bytes per event")
print(f"ftail per-event cost / floor per-event cost (min): {ours / floor:.2f}")
print(f"ftail per-event cost / file-backed floor per-event cost (min): {ours / file_floor:.2f}")
print(f"flight recorder per-event cost / floor per-event cost (min): {ring / floor:.2f}")
print(f"capped at 262 144 events' worth: {(t[7][0] - t[0][0]) / ev * 1e9:.1f} ns per event over plain (min), "
      f"almost all of them lost")
print(f"callgrind, 1 M calls: plain {ip:,}, instrumented untraced {ii:,} instructions: "
      f"{(ii - ip) / 1e6:.2f} more per call")
PY
