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
data="$WORK/zstd-input"
[ -f "$data" ] || cat "$(sqlite_sources)/sqlite3.c" "$(sqlite_sources)/sqlite3.c" > "$data"
cd "$WORK"
"$zstd_plain" -q -f -3 "$data" -o "$data.zst"

rows=()
row() { # name workload-for-callgrind... -- workload-for-hyperfine (with %s for the binary)
  local name=$1 plain=$2 instr=$3 small=$4 big=$5
  local ip ii
  ip=$(instructions $(printf "$small" "$plain"))
  ii=$(instructions $(printf "$small" "$instr"))
  hyperfine --style basic --runs "$runs" --warmup 1 --export-json "untraced-$name.json" \
    "$(printf "$big" "$plain")" "$(printf "$big" "$instr")" >/dev/null 2>&1
  rows+=("$name|$(printf "$small" X | cut -d' ' -f2-)|$(printf "$big" X | cut -d' ' -f2-)|$ip|$ii|$(text_size "$plain")|$(text_size "$instr")|untraced-$name.json")
}
row speedtest1 "$st_plain" "$st_ftail" "%s --size 1" "%s --size 10"
row lua "$lua_plain" "$lua_ftail" "%s $script 1" "%s $script 10"
row zstd-compress "$zstd_plain" "$zstd_ftail" "%s -q -c -3 $(sqlite_sources)/sqlite3.c" "%s -q -c -3 $data"
row zstd-decompress "$zstd_plain" "$zstd_ftail" "%s -q -d -c $data.zst" "%s -q -d -c $data.zst"

printf '%s\n' "${rows[@]}" | python3 -c '
import json, statistics, sys
print("| program | instructions (callgrind) plain / instrumented | ratio | wall min plain / instrumented | ratio min | ratio median | code size growth |")
print("|---|---|---|---|---|---|---|")
for line in sys.stdin:
    name, small, big, ip, ii, sp, si, js = line.strip().split("|")
    r = json.load(open(js))["results"]
    mn = [min(x["times"]) for x in r]
    md = [statistics.median(x["times"]) for x in r]
    ip, ii, sp, si = int(ip), int(ii), int(sp), int(si)
    print(f"| {name} (`{small}`; wall: `{big}`) | {ip:,} / {ii:,} | {ii/ip:.4f} | {mn[0]*1e3:.0f} / {mn[1]*1e3:.0f} ms "
          f"| {mn[1]/mn[0]:.3f} | {md[1]/md[0]:.3f} | {100*(si-sp)/sp:+.1f} % ({sp:,} to {si:,} bytes) |")
'
