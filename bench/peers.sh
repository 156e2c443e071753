#!/usr/bin/env bash
# The same call-heavy loop (bench/hotloop.c: a non-inlined tiny function
# called N times) traced by ftail and by its peers, each against the plain
# build of its own compiler, all in one hyperfine run:
#   ftail record (gcc -O2 through ftail cc), uftrace record (gcc -O2 -pg
#   -mfentry), gcc -O2 -finstrument-functions with a minimal counting hook
#   (tests/differential/finstr-hook.c: no timestamps, no trace), and clang
#   XRay in basic mode (clang-19 -O2 -fxray-instrument, every function).
# ftail keeps every event (its default). Prints ns per traced call over
# the plain build, min and median.
# PEERS_FTAIL_ARGS adds options to ftail record (e.g. --drain=1M).
# Usage: bench/peers.sh [RUNS] [CALLS]   (default 5, 10000000)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
n=${2:-10000000}
need hyperfine gcc clang-19 uftrace python3
build_ftail
d="$WORK/peers"
mkdir -p "$d"
cd "$d"
src="$ROOT/bench/hotloop.c"
gcc -O2 -o plain-gcc "$src"
"$FTAIL" cc gcc -O2 -o ftail "$src"
gcc -O2 -pg -mfentry -o uftrace "$src"
gcc -O2 -c -o hook.o "$ROOT/tests/differential/finstr-hook.c"
gcc -O2 -finstrument-functions -o finstr "$src" hook.o
clang-19 -O2 -o plain-clang "$src"
clang-19 -O2 -fxray-instrument -fxray-instruction-threshold=1 -o xray "$src"
xray_env="XRAY_OPTIONS='patch_premain=true xray_mode=xray-basic verbosity=0 xray_logfile_base=$d/xray-log.' XRAY_BASIC_OPTIONS='func_duration_threshold_us=0'"
hyperfine --style basic --runs "$runs" --warmup 1 --export-json peers.json \
  --prepare "$(after_watchers ftail.data); rm -rf $d/xray-log.* $d/uftrace.data $d/ftail.data*" \
  "./plain-gcc $n" \
  "$FTAIL record -d ftail.data --tail mark ${PEERS_FTAIL_ARGS:-} -- ./ftail $n" \
  "uftrace record -d uftrace.data ./uftrace $n" \
  "./finstr $n" \
  "./plain-clang $n" \
  "env $xray_env ./xray $n" \
  >/dev/null 2>&1
python3 - "$n" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
r = json.load(open("peers.json"))["results"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
rows = [("ftail record (gcc, --tail=mark)", 1, 0), ("uftrace record (gcc -pg -mfentry)", 2, 0),
        ("-finstrument-functions, counting hook (gcc)", 3, 0), ("XRay basic mode (clang-19)", 5, 4)]
print("| tracer | min | median | ns per call over its plain build (min / median) | per call / ftail's (min) |")
print("|---|---|---|---|---|")
print(f"| plain gcc -O2 | {t[0][0]*1e3:.1f} ms | {t[0][1]*1e3:.1f} ms | | |")
print(f"| plain clang-19 -O2 | {t[4][0]*1e3:.1f} ms | {t[4][1]*1e3:.1f} ms | | |")
ours = (t[1][0] - t[0][0]) / n
for name, i, base in rows:
    mn = (t[i][0] - t[base][0]) / n
    md = (t[i][1] - t[base][1]) / n
    print(f"| {name} | {t[i][0]*1e3:.1f} ms | {t[i][1]*1e3:.1f} ms | {mn*1e9:.1f} / {md*1e9:.1f} | {mn/ours:.2f} |")
PY
