#!/usr/bin/env bash
# Per-event cost of tracing on a call-heavy loop (10 M calls of a tiny
# function = 20 M events), against a baseline and the floor measured in the
# same run. hyperfine min/median of RUNS runs each; prints a table.
# Usage: bench/event-cost.sh [RUNS] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/.."
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
events=$((n * 2 + 4))
buf=$((events + 1024))
hyperfine --style basic --runs "$runs" --warmup 1 --export-json event.json \
  "./hotloop-plain $n" \
  "./hotloop $n" \
  "./hotloop-plain $n floor" \
  "./hotloop-plain $n file" \
  "$ftail record -d trace --buffer-events $buf --tail mark -- ./hotloop $n" \
  "$ftail record -d trace --buffer-events $buf --tail convert -- ./hotloop $n" \
  >/dev/null 2>&1
size=$(du -k --apparent-size trace/*.events | awk '{s+=$1} END {print s*1024}')
used=$(python3 - trace <<'PY'
import glob, struct, sys
n = 0
for f in glob.glob(sys.argv[1] + "/*.events"):
    d = open(f, "rb").read()
    for i in range(80, len(d), 16):
        if struct.unpack_from("<Q", d, i)[0] == 0:
            break
        n += 1
print(n)
PY
)
python3 - "$n" "$used" <<'PY'
import json, statistics, sys
n, used = int(sys.argv[1]), int(sys.argv[2])
r = json.load(open("event.json"))["results"]
name = ["plain -O2 build", "instrumented, untraced", "floor (rdtsc + 16-byte store per event, cache-resident buffer)",
        "floor into a fresh file-backed mapping (every event kept)",
        "ftail record --tail=mark", "ftail record --tail=convert"]
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
print(f"\nrecorded events: {used} (expected {ev} + a few); bytes per event: 16")
print(f"ftail per-event cost / floor per-event cost (min): {ours / floor:.2f}")
print(f"ftail per-event cost / file-backed floor per-event cost (min): {ours / file_floor:.2f}")
PY
