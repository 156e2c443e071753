#!/usr/bin/env bash
# Compile-time cost of the compiler side, on the SQLite amalgamation:
#  1. rewrite throughput of `ftail as` (MB/s of assembly in), with the real
#     assembler replaced by `true` so that only ftail's work is timed;
#  2. wall time of `gcc -O2 -c sqlite3.c` plain vs through `ftail cc`.
# Both measured with hyperfine in the same run; prints a table.
# Usage: bench/compile-time.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --quiet -p ftail-cli
ftail="$PWD/target/release/ftail"
work="$PWD/target/bench/compile"
mkdir -p "$work"
if [ ! -f "$work/sqlite3.c" ]; then
  corpus/fetch.sh sqlite >/dev/null
  rm -rf "$work/src" && cp -r corpus/.cache/src/sqlite "$work/src"
  (cd "$work/src" && ./configure --quiet --disable-tcl >/dev/null && make -s sqlite3.c >/dev/null)
  cp "$work/src/sqlite3.c" "$work/src/sqlite3.h" "$work/"
fi
cd "$work"
gcc -O2 -S -o sqlite3.s sqlite3.c
bytes=$(stat -c %s sqlite3.s)
hyperfine --style basic --runs "$runs" --warmup 1 --export-json rewrite.json \
  "FTAIL_AS=true $ftail as --64 -o /dev/null sqlite3.s" >/dev/null
hyperfine --style basic --runs "$runs" --warmup 1 --export-json build.json \
  "gcc -O2 -c -o plain.o sqlite3.c" \
  "$ftail cc gcc -O2 -c -o ftail.o sqlite3.c" >/dev/null
python3 - "$bytes" <<'PY'
import json, statistics, sys
size = int(sys.argv[1])
rw = json.load(open("rewrite.json"))["results"][0]["times"]
b = json.load(open("build.json"))["results"]
plain, ours = b[0]["times"], b[1]["times"]
print(f"| measure | min | median |")
print(f"|---|---|---|")
print(f"| `ftail as` rewrite of sqlite3.s ({size/1e6:.1f} MB) | {size/1e6/min(rw):.1f} MB/s | {size/1e6/statistics.median(rw):.1f} MB/s |")
print(f"| `gcc -O2 -c sqlite3.c` plain | {min(plain):.2f} s | {statistics.median(plain):.2f} s |")
print(f"| same through `ftail cc` | {min(ours):.2f} s | {statistics.median(ours):.2f} s |")
print(f"| ratio instrumented / plain | {min(ours)/min(plain):.3f} | {statistics.median(ours)/statistics.median(plain):.3f} |")
PY
