#!/usr/bin/env bash
# Extra cost per call of recording a return value (-R) and two integer
# arguments (-A) with ftail, next to uftrace's with the same specs.
# A tiny function add(a, b) is called N times; each row is the recorded
# run's time minus the plain recorded run's (same tracer, no spec),
# divided by N; min and median of RUNS (5) hyperfine runs each.
# Usage: bench/args.sh [N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need gcc uftrace hyperfine
build_ftail
N="${1:-2000000}"
SRC="$WORK/argsloop.c"
cat > "$SRC" <<'C'
#include <stdlib.h>
__attribute__((noinline)) int add(int a, int b) { return a + b; }
int main(int argc, char **argv) {
    long n = atol(argv[1]), s = 0;
    for (long i = 0; i < n; i++)
        s += add((int)i, 3);
    return s == 42;
}
C
"$FTAIL" cc gcc -O2 -o "$WORK/argsloop-ftail" "$SRC"
gcc -O2 -pg -mfentry -o "$WORK/argsloop-pg" "$SRC"
T="$WORK/args-trace"
RUNS="${RUNS:-5}"
cd "$WORK"
hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json args.json \
  --prepare "$(after_watchers "$T"); rm -rf $T" \
  "$FTAIL record -d $T -- ./argsloop-ftail $N" \
  "$FTAIL record -d $T -R add@i32 -- ./argsloop-ftail $N" \
  "$FTAIL record -d $T -A add@arg1/i32,arg2/i32 -- ./argsloop-ftail $N" \
  "uftrace record -d $T ./argsloop-pg $N" \
  "uftrace record -d $T -R add@retval/i32 ./argsloop-pg $N" \
  "uftrace record -d $T -A add@arg1/i32,arg2/i32 ./argsloop-pg $N" \
  >/dev/null 2>&1
rm -rf "$T"
python3 - "$N" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
r = json.load(open("args.json"))["results"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
def extra(i, base):
    return ((t[i][0] - t[base][0]) / n * 1e9, (t[i][1] - t[base][1]) / n * 1e9)
print(f"calls: {n}; extra ns per call over the same tracer recording without a spec (min / median of {len(r[0]['times'])} runs)")
print("| spec | ftail | uftrace | ftail / uftrace (min) |")
print("|---|---|---|---|")
for name, f, u in [("-R (return value, int)", 1, 4), ("-A (two int arguments)", 2, 5)]:
    fm, fd = extra(f, 0)
    um, ud = extra(u, 3)
    print(f"| {name} | {fm:.1f} / {fd:.1f} | {um:.1f} / {ud:.1f} | {fm / um:.1f} |")
fm, fd = t[0][0] / n * 1e9, t[0][1] / n * 1e9
um, ud = t[3][0] / n * 1e9, t[3][1] / n * 1e9
print(f"| recording without a spec, ns per call (whole run / calls) | {fm:.1f} / {fd:.1f} | {um:.1f} / {ud:.1f} | {fm / um:.2f} |")
PY
