#!/usr/bin/env bash
# Cost of instrumentation when nothing is traced (every site a 5-byte nop),
# against the plain -O2 build of the same source, on three real programs:
# SQLite's speedtest1, Lua running a CPU-bound script, zstd compressing and
# decompressing. Instructions from callgrind (small inputs), wall time
# from hyperfine (min and median of RUNS runs, plain and instrumented
# interleaved in one hyperfine run), code size from size(1).
# Usage: bench/untraced.sh [RUNS]   (default 5)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
runs=${1:-5}
need hyperfine valgrind gcc size python3
build_ftail
st_plain=$(build_speedtest plain gcc -O2)
st_ftail=$(build_speedtest ftail "$FTAIL cc gcc" -O2)
lua_plain=$(build_lua plain gcc -O2)
lua_ftail=$(build_lua ftail "$FTAIL cc gcc" -O2)
zstd_plain=$(build_zstd plain gcc -O2)
zstd_ftail=$(build_zstd ftail "$FTAIL cc gcc" -O2)
script="$ROOT/tests/differential/work.lua"
src="$(sqlite_sources)"
data="$WORK/zstd-input"
[ -f "$data" ] || for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat "$src/sqlite3.c"; done > "$data"
cd "$WORK"
"$zstd_plain" -q -f -3 "$data" -o "$data.zst"

rows=()
# row NAME PLAIN INSTRUMENTED "small args" "big args" "description"
row() {
  local name=$1 plain=$2 instr=$3 small=$4 big=$5 what=$6 ip ii
  ip=$(instructions "$plain" $small)
  ii=$(instructions "$instr" $small)
  hyperfine --style basic --runs "$runs" --warmup 1 --export-json "untraced-$name.json" \
    "$plain $big" "$instr $big" >/dev/null 2>&1
  rows+=("$name|$what|$ip|$ii|$(text_size "$plain")|$(text_size "$instr")|untraced-$name.json|$(code_size "$plain")|$(code_size "$instr")|$(tables_size "$instr")")
}
row speedtest1 "$st_plain" "$st_ftail" "--size 1" "--size 60" \
  "callgrind: --size 1; wall: --size 60"
row lua "$lua_plain" "$lua_ftail" "$script 1" "$script 400" \
  "tests/differential/work.lua; callgrind: 1 round; wall: 400 rounds"
row zstd-compress "$zstd_plain" "$zstd_ftail" "-q -c -3 $src/sqlite3.c" "-q -c -3 $data" \
  "-3; callgrind: sqlite3.c (9 MB); wall: 16 copies (145 MB)"
row zstd-decompress "$zstd_plain" "$zstd_ftail" "-q -d -c $data.zst" "-q -d -c $data.zst" \
  "-d of the 145 MB compressed"

printf '%s\n' "${rows[@]}" | python3 -c '
import json, statistics, sys
print("| program (workload) | instructions plain / instrumented | ratio | wall min plain / instrumented | ratio min | ratio median | size(1) text growth | .text growth | site tables |")
print("|---|---|---|---|---|---|---|---|---|")
for line in sys.stdin:
    name, what, ip, ii, sp, si, js, cp, ci, tb = line.strip().split("|")
    r = json.load(open(js))["results"]
    mn = [min(x["times"]) for x in r]
    md = [statistics.median(x["times"]) for x in r]
    ip, ii, sp, si, cp, ci, tb = int(ip), int(ii), int(sp), int(si), int(cp), int(ci), int(tb)
    print(f"| {name} ({what}) | {ip:,} / {ii:,} | {ii/ip:.4f} | {mn[0]*1e3:.0f} / {mn[1]*1e3:.0f} ms "
          f"| {mn[1]/mn[0]:.3f} | {md[1]/md[0]:.3f} | {100*(si-sp)/sp:+.1f} % ({sp:,} to {si:,} bytes) "
          f"| {100*(ci-cp)/cp:+.1f} % ({cp:,} to {ci:,} bytes) | {tb:,} bytes ({100*tb/sp:.1f} % of plain text) |")
'
