#!/usr/bin/env bash
# Library calls (call sites): a loop of N calls of atoi through the PLT.
# * Untraced cost: instructions (callgrind) of the ftail build run
#   untraced against the plain -O2 build: a call site is the original
#   `call` until it is traced, so the difference is the entry nops of
#   main and loop, nothing per call.
# * Traced instructions per call (callgrind, under `ftail record`): a
#   library call against a call of one of the program's own functions
#   (`libcall.c own`), each over its plain build. Valgrind runs slowly,
#   so the trace takes more time records than it does natively: a few
#   instructions per call more than a native run executes.
# * The same two for atoi called through a function pointer (`ind`): an
#   indirect call site is the original `call *%reg` (padded with `cs`
#   prefixes) until traced.
# * Traced cost per call: the slope of wall time between N and 5N calls
#   (which cancels each tool's start-up), less the plain build's, for
#   `ftail record` of the ftail build (library calls, and calls of the
#   program's own function) and for `uftrace record` of the -pg -mfentry
#   build (uftrace records library calls by default); min of RUNS runs
#   each (hyperfine, all in one run per size).
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
ipi=$(instructions "$plain" $small ind)
iii=$(instructions "$ftail" $small ind)
ipi2=$(instructions "$plain" $((small * 10)) ind)
iii2=$(instructions "$ftail" $((small * 10)) ind)
echo "untraced, $small indirect calls: plain $ipi, instrumented $iii instructions (+$((iii - ipi)))"
echo "untraced, $((small * 10)) indirect calls: plain $ipi2, instrumented $iii2 instructions (+$((iii2 - ipi2)))"
# Instructions per call traced, over the plain build: N calls and 10N.
traced_per_call() {
  local mode=$1 a b pa pb
  a=$("$FTAIL" record -d "$WORK/libcall-cg" -- valgrind --tool=callgrind --smc-check=all \
    --callgrind-out-file=/dev/null "$ftail" $small $mode 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  b=$("$FTAIL" record -d "$WORK/libcall-cg" -- valgrind --tool=callgrind --smc-check=all \
    --callgrind-out-file=/dev/null "$ftail" $((small * 10)) $mode 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  pa=$(instructions "$plain" $small $mode)
  pb=$(instructions "$plain" $((small * 10)) $mode)
  echo $(((b - a - pb + pa) / (small * 9)))
}
echo "traced instructions per call: library call $(traced_per_call lib)," \
  "indirect library call $(traced_per_call ind)," \
  "call of the program's own function $(traced_per_call own)"
cd "$WORK"
for k in 1 5; do
  hyperfine --style basic --runs "$runs" --warmup 1 --export-json "$WORK/libcall-$k.json" \
    "$plain $((n * k))" \
    "$FTAIL record -d $WORK/libcall-trace -- $ftail $((n * k))" \
    "uftrace record -d $WORK/libcall-uftrace $pg $((n * k))" \
    "$plain $((n * k)) own" \
    "$FTAIL record -d $WORK/libcall-trace -- $ftail $((n * k)) own" >/dev/null 2>&1
done
python3 - "$WORK" "$n" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
t = [[min(x["times"]) for x in json.load(open(f"{work}/libcall-{k}.json"))["results"]] for k in (1, 5)]
slope = [(t[1][i] - t[0][i]) / (4 * n) * 1e9 for i in range(5)]
plain, ftail, uftrace, plain_own, ftail_own = slope
f, u, o = ftail - plain, uftrace - plain, ftail_own - plain_own
print(f"per iteration: plain {plain:.1f} ns, ftail {ftail:.1f} ns, uftrace {uftrace:.1f} ns")
print(f"per library call traced: ftail {f:.1f} ns, uftrace {u:.1f} ns: uftrace/ftail {u/f:.1f}x")
print(f"per call of the program's own function traced: ftail {o:.1f} ns: library/own {f/o:.2f}x")
PY
