#!/usr/bin/env bash
# Wall time of Lua's official test suite (all.lua) untraced and fully
# traced (every function of lua, every site patched, --tail=auto), on the
# gcc build the corpus tests leave in target/corpus/lua54-gcc.
# Usage: bench/lua-traced.sh [RUNS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
lua=target/corpus/lua54-gcc
[ -x "$lua/lua" ] || { echo "build it first: FTAIL_CORPUS=1 cargo test --release -p ftail-cli --test corpus lua_gcc_c" >&2; exit 1; }
ftail="$PWD/target/release/ftail"
cd "$lua/testes"
ulimit -S -s 1100
hyperfine --style basic --runs "$runs" --export-json /tmp/ftail-lua.json \
  'true | env --default-signal=HUP ../lua -W all.lua >/dev/null 2>&1' \
  "true | env --default-signal=HUP $ftail record -d /tmp/ftail-lua-trace --buffer-events 262144 -- ../lua -W all.lua >/dev/null 2>&1" \
  >/dev/null
python3 - <<'PY'
import json, statistics
r = json.load(open("/tmp/ftail-lua.json"))["results"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
print("| run | min | median |\n|---|---|---|")
for name, (mn, md) in zip(["untraced", "ftail record (auto)"], t):
    print(f"| {name} | {mn:.2f} s | {md:.2f} s |")
print(f"| ratio traced / untraced | {t[1][0]/t[0][0]:.2f} | {t[1][1]/t[0][1]:.2f} |")
PY
