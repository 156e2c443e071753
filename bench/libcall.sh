#!/usr/bin/env bash
# Library calls (call sites): a loop of N calls of atoi through the PLT.
# * Untraced cost: instructions (callgrind) of the ftail build run
#   untraced against the plain -O2 build: a call site is the original
#   `call` until it is traced, so the difference is the entry nops of
#   main and loop, nothing per call.
# * Traced cost per library call: the slope of wall time between N and
#   5N calls (which cancels each tool's start-up), less the plain build's,
#   for `ftail record` of the ftail build and for `uftrace record` of the
#   -pg -mfentry build (uftrace records library calls by default); min of
#   RUNS runs each (hyperfine, the three in one run per size).
# Usage: bench/libcall.sh [N] [RUNS]   (defaults 1000000, 5)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
n=${1:-1000000}
runs=${2:-5}
need hyperfine valgrind gcc uftrace python3
build_ftail
src="$ROOT/bench/libcall.c"
plain="$WORK/libcall-plain"
ftail="$WORK/libcall-ftail"
pg="$WORK/libcall-pg"
gcc -O2 -o "$plain" "$src"
"$FTAIL" cc gcc -O2 -o "$ftail" "$src"
gcc -O2 -pg -mfentry -o "$pg" "$src"
small=1000
ip=$(instructions "$plain" $small)
ii=$(instructions "$ftail" $small)
ip2=$(instructions "$plain" $((small * 10)))
ii2=$(instructions "$ftail" $((small * 10)))
echo "untraced, $small calls: plain $ip, instrumented $ii instructions (+$((ii - ip)))"
echo "untraced, $((small * 10)) calls: plain $ip2, instrumented $ii2 instructions (+$((ii2 - ip2)))"
cd "$WORK"
for k in 1 5; do
  hyperfine --style basic --runs "$runs" --warmup 1 --export-json "$WORK/libcall-$k.json" \
    "$plain $((n * k))" \
    "$FTAIL record -d $WORK/libcall-trace -- $ftail $((n * k))" \
    "uftrace record -d $WORK/libcall-uftrace $pg $((n * k))" >/dev/null 2>&1
done
python3 - "$WORK" "$n" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
t = [[min(x["times"]) for x in json.load(open(f"{work}/libcall-{k}.json"))["results"]] for k in (1, 5)]
slope = [(t[1][i] - t[0][i]) / (4 * n) * 1e9 for i in range(3)]
plain, ftail, uftrace = slope
f, u = ftail - plain, uftrace - plain
print(f"per iteration: plain {plain:.1f} ns, ftail {ftail:.1f} ns, uftrace {uftrace:.1f} ns")
print(f"per library call traced: ftail {f:.1f} ns, uftrace {u:.1f} ns: uftrace/ftail {u/f:.1f}x")
PY
