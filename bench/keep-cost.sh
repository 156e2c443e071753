#!/usr/bin/env bash
# Where the time of keeping every event goes: the loop of bench/hotloop.c
# (10 M calls, 20 M events), timed inside the program (HOTLOOP_TIME: no
# start-up or exit in the number), min of RUNS rounds, the variants
# interleaved in each round so that they share the machine's load:
#   plain, the floor (rdtsc + 16-byte store, cache-resident), the flight
#   recorder (--ring 1M), keeping every event in growing event files
#   (`--no-drain`, the default before drained rings) on the trace
#   directory's filesystem and on tmpfs, and keeping every event with
#   bench/prefault.c beside it: `pop` allocates each event file's new
#   pages in the page cache from another process as the file grows,
#   `fallocate` reserves its blocks ahead, `idle` only watches (control);
#   on tmpfs too (no page_mkwrite there: what mapping cached pages costs);
#   keeping every event with FTAIL_HUGEPAGE=1 (MADV_HUGEPAGE on the event
#   mapping: larger page-cache folios, fewer faults) and, when
#   KEEP_COST_HUGE_DIR names a directory on a tmpfs mounted huge=always
#   (`mount -t tmpfs -o huge=always,size=2G none DIR`, as root), there;
#   keeping every event in a drained ring (`--drain`, the default, 8M
#   and 1M per thread), compressed by `ftail record` beside the program: zstd while
#   the drainer keeps up and LZ4 once it falls behind (drain), zstd only
#   (drain-zstd), LZ4 only (drain-lz4).
# KEEP_COST_VARIANTS="plain floor ring keep drain" runs only those.
# Also the minor page faults and system time of each run (/usr/bin/time,
# the whole `ftail record` included) and, with perf, where the traced
# thread's time goes when everything is kept.
# Usage: bench/keep-cost.sh [RUNS] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
n=${2:-10000000}
cargo build --release --quiet -p ftail-cli -p ftail-runtime
ftail="$PWD/target/release/ftail"
work="$PWD/target/bench/keep"
mkdir -p "$work"
"$ftail" cc gcc -O2 -o "$work/hotloop" bench/hotloop.c
gcc -O2 -o "$work/hotloop-plain" bench/hotloop.c
gcc -O2 -o "$work/prefault" bench/prefault.c
cd "$work"
shm=$(mktemp -d /dev/shm/ftail-keep.XXXXXX)
trap 'rm -rf "$shm" ${huge:+"$huge/trace" "$huge/trace.old"} trace trace.old hotloop.events STOP tm.txt' EXIT
# with DIR MODE CMD...: CMD with `prefault DIR MODE` beside it.
with() {
  local dir=$1 mode=$2 p rc=0
  shift 2
  rm -f STOP "$shm/STOP"
  ./prefault "$dir" "$mode" &
  p=$!
  "$@" || rc=$?
  touch STOP "$shm/STOP"
  wait "$p"
  rm -f STOP "$shm/STOP"
  return $rc
}
names=(plain floor ring keep keep-tmpfs keep+idle keep+pop keep+fallocate keep+pop+fallocate keep-tmpfs+pop
  keep+hugepage drain drain-1M drain-zstd drain-lz4)
huge=${KEEP_COST_HUGE_DIR:-}
[ -n "$huge" ] && names+=(keep-huge-tmpfs)
[ -n "${KEEP_COST_VARIANTS:-}" ] && read -ra names <<<"$KEEP_COST_VARIANTS"
T=(/usr/bin/time -o tm.txt -f "%R %S")
run() {
  case $1 in
    plain) "${T[@]}" ./hotloop-plain "$n" ;;
    floor) "${T[@]}" ./hotloop-plain "$n" floor ;;
    ring) "${T[@]}" "$ftail" record -d trace --ring 1M --tail mark -- ./hotloop "$n" ;;
    keep) "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    keep-tmpfs) "${T[@]}" "$ftail" record --no-drain -d "$shm/trace" --tail mark -- ./hotloop "$n" ;;
    keep+idle) with trace idle "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    keep+pop) with trace pop "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    keep+fallocate) with trace fallocate "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    keep+pop+fallocate) with trace both "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    keep-tmpfs+pop) with "$shm/trace" pop "${T[@]}" "$ftail" record --no-drain -d "$shm/trace" --tail mark -- ./hotloop "$n" ;;
    keep+hugepage) FTAIL_HUGEPAGE=1 "${T[@]}" "$ftail" record --no-drain -d trace --tail mark -- ./hotloop "$n" ;;
    drain) "${T[@]}" "$ftail" record -d trace --drain --tail mark -- ./hotloop "$n" ;;
    drain-1M) "${T[@]}" "$ftail" record -d trace --drain=1M --tail mark -- ./hotloop "$n" ;;
    drain-zstd) FTAIL_DRAIN_CODEC=zstd "${T[@]}" "$ftail" record -d trace --drain --tail mark -- ./hotloop "$n" ;;
    drain-lz4) FTAIL_DRAIN_CODEC=lz4 "${T[@]}" "$ftail" record -d trace --drain --tail mark -- ./hotloop "$n" ;;
    keep-huge-tmpfs) "${T[@]}" "$ftail" record --no-drain -d "$huge/trace" --tail mark -- ./hotloop "$n" ;;
  esac
}
export HOTLOOP_TIME=1
: >times.txt
for ((r = 0; r < runs; r++)); do
  for v in "${names[@]}"; do
    rm -rf trace trace.old "$shm/trace" "$shm/trace.old" ${huge:+"$huge/trace" "$huge/trace.old"}
    ns=$(run "$v" 2>&1 >/dev/null | awk '/^loop_ns/ {print $2, $4, $6, $8}') || true
    echo "$v $ns $(cat tm.txt)" >>times.txt
  done
done
python3 - "$n" <<'PY'
import sys, collections
n = int(sys.argv[1]); ev = 2 * n
runs = collections.defaultdict(list)
for line in open("times.txt"):
    v, *x = line.split()
    if len(x) == 6: runs[v].append([float(y) for y in x])
# Per variant: the least loop wall time, and the run with the least
# thread CPU time (its user/system split and faults), over the runs.
# Fields: loop wall ns, thread user us, thread sys us, thread minor
# faults, whole run's minor faults, whole run's sys s.
def pick(rs):
    c = min(rs, key=lambda r: r[1] + r[2])
    return [min(r[0] for r in rs), (c[1] + c[2]) * 1e3, c[1] * 1e3, c[2] * 1e3, c[3], c[4], c[5]]
best = {v: pick(rs) for v, rs in runs.items()}
p = best["plain"]
over = lambda v, i: (best[v][i] - p[i]) / ev
print("| variant | loop wall, min | ns/event over plain: wall | / floor | thread CPU (user+sys) | / floor | user | sys | thread minor faults | whole run: minor faults, sys s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for v in runs:
    b = best[v]
    r = lambda i: "" if v == "plain" else f"{over(v, i) / over('floor', i):.2f}"
    print(f"| {v} | {b[0] / 1e6:.1f} ms | {over(v, 0):.2f} | {r(0)} | {over(v, 1):.2f} | {r(1)} | "
          f"{over(v, 2):.2f} | {over(v, 3):.2f} | {int(b[4])} | {int(b[5])}, {b[6]:.2f} |")
PY
