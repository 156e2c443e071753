#!/usr/bin/env bash
# The question the design started from: what tail calls cost under each
# strategy, on a tail-call-heavy loop (bench/tailchain.c: each of N outer
# calls runs a chain of four tail calls). Rows: the plain build (tails are
# jumps), the instrumented build untraced, traced with --tail=mark and
# --tail=convert, and the alternative the discussion feared — building
# with -fno-optimize-sibling-calls so there are no tail calls at all —
# plain and traced. Ratios are to the plain build, all in one hyperfine
# run (min and median of RUNS); traced runs keep every event (the
# default). Also the instructions each build executes per outer call
# (callgrind, 100 000 outer calls).
# Usage: bench/tails.sh [RUNS] [CALLS]   (default 5, 2000000)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
n=${2:-2000000}
need hyperfine gcc python3
build_ftail
d="$WORK/tails"
mkdir -p "$d"
cd "$d"
src="$ROOT/bench/tailchain.c"
gcc -O2 -o plain "$src"
"$FTAIL" cc gcc -O2 -o ftail "$src"
gcc -O2 -fno-optimize-sibling-calls -o nosib-plain "$src"
"$FTAIL" cc gcc -O2 -fno-optimize-sibling-calls -o nosib-ftail "$src"
tails=$("$FTAIL" sites ftail | tail -1)
nosib=$("$FTAIL" sites nosib-ftail | tail -1)
rec="$FTAIL record -d trace"
hyperfine --style basic --runs "$runs" --warmup 1 --export-json tails.json \
  --prepare "$(after_watchers trace); rm -rf trace trace.old" \
  "./plain $n" "./ftail $n" \
  "$rec --tail mark -- ./ftail $n" "$rec --tail convert -- ./ftail $n" \
  "./nosib-plain $n" "$rec -- ./nosib-ftail $n" >/dev/null 2>&1
ci=100000
ins=()
for b in plain ftail nosib-plain nosib-ftail; do ins+=("$(instructions "./$b" $ci)"); done
python3 - "$n" "$tails" "$nosib" "$ci" "${ins[@]}" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
ci = int(sys.argv[4])
ins = [int(x) for x in sys.argv[5:9]]
r = json.load(open("tails.json"))["results"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
names = ["plain -O2 (tail calls are jumps)", "instrumented, untraced",
         "ftail record --tail=mark", "ftail record --tail=convert",
         "-fno-optimize-sibling-calls, plain", "-fno-optimize-sibling-calls, ftail record"]
print("| build / run | min | median | ns per outer call (min) | ratio to plain (min / median) |")
print("|---|---|---|---|---|")
for name, (mn, md) in zip(names, t):
    print(f"| {name} | {mn*1e3:.1f} ms | {md*1e3:.1f} ms | {mn/n*1e9:.1f} | {mn/t[0][0]:.2f} / {md/t[0][1]:.2f} |")
print(f"\nSites: `{sys.argv[2]}`; with -fno-optimize-sibling-calls: `{sys.argv[3]}`.")
print(f"\nInstructions (callgrind, {ci:,} outer calls of 5 calls each): plain {ins[0]:,}, "
      f"instrumented {ins[1]:,} ({(ins[1] - ins[0]) / ci:.2f} more per outer call, "
      f"{(ins[1] - ins[0]) / ci / 5:.2f} per call); -fno-optimize-sibling-calls plain {ins[2]:,}, "
      f"instrumented {ins[3]:,} ({(ins[3] - ins[2]) / ci:.2f} more per outer call).")
PY
