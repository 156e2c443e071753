#!/usr/bin/env bash
# Extra cost per call of recording a return value (-R) and two integer
# arguments (-A) with ftail, next to uftrace's with the same specs.
# A tiny function add(a, b) is called N times; each row is the recorded
# run's time minus the plain recorded run's (same tracer, no spec),
# divided by N, best of 5 runs each. Usage: bench/args.sh [N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need gcc uftrace
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

# best of 5, in seconds
best() {
  local b=999
  for _ in 1 2 3 4 5; do
    rm -rf "$T"
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    e=$(date +%s.%N)
    b=$(echo "$e - $s" | bc -l | awk -v b="$b" '{ print ($1 < b) ? $1 : b }')
  done
  echo "$b"
}

ns_per_call() { echo "($1 - $2) * 1000000000 / $N" | bc -l | xargs printf '%.1f'; }

F0=$(best "$FTAIL" record -d "$T" -- "$WORK/argsloop-ftail" "$N")
FR=$(best "$FTAIL" record -d "$T" -R 'add@i32' -- "$WORK/argsloop-ftail" "$N")
FA=$(best "$FTAIL" record -d "$T" -A 'add@arg1/i32,arg2/i32' -- "$WORK/argsloop-ftail" "$N")
U0=$(best uftrace record -d "$T" "$WORK/argsloop-pg" "$N")
UR=$(best uftrace record -d "$T" -R 'add@retval/i32' "$WORK/argsloop-pg" "$N")
UA=$(best uftrace record -d "$T" -A 'add@arg1/i32,arg2/i32' "$WORK/argsloop-pg" "$N")
rm -rf "$T"
echo "calls: $N; extra ns per call over the same tracer without a spec"
printf '%-28s %10s %10s\n' spec ftail uftrace
printf '%-28s %10s %10s\n' "-R add@i32" "$(ns_per_call "$FR" "$F0")" "$(ns_per_call "$UR" "$U0")"
printf '%-28s %10s %10s\n' "-A add@arg1/i32,arg2/i32" "$(ns_per_call "$FA" "$F0")" "$(ns_per_call "$UA" "$U0")"
printf '%-28s %10s %10s\n' "(plain recording, ns/call)" \
  "$(ns_per_call "$F0" 0)" "$(ns_per_call "$U0" 0)"
