#!/usr/bin/env bash
# Wall time of Lua's official test suite (all.lua) untraced and fully
# traced (every function of lua, every site patched, --tail=auto), on the
# gcc build the corpus tests leave in target/corpus/lua54-gcc. Traced
# runs: "capped" keeps each thread's first 262 144 events' worth (2 MiB
# of compact events; the rest are counted as lost, every call still goes
# through the trampolines), "ring" is the flight recorder with a 4 MiB
# ring per thread (every event written, the latest kept), "keep" keeps
# every event in growing event files (`--no-drain`), "drain" keeps every
# event through an 8 MiB drained ring per thread (the default, `--drain`),
# compressed by `ftail record`, "drain1m" through a 1 MiB one.
# Usage: bench/lua-traced.sh [RUNS] [MODES]   (default 3, "capped ring")
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
modes=${2:-capped ring}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
lua=target/corpus/lua54-gcc
[ -x "$lua/lua" ] || { echo "build it first: FTAIL_CORPUS=1 cargo test --release -p ftail-cli --test corpus -- --exact lua_gcc_c" >&2; exit 1; }
ftail="$PWD/target/release/ftail"
. bench/lib.sh
# The traces and hyperfine's results in a private directory: never a
# predictable name in the shared /tmp.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$lua/testes"
ulimit -S -s 1100
cmds=('true | env --default-signal=HUP ../lua -W all.lua >/dev/null 2>&1')
names=(untraced)
for m in $modes; do
  case $m in
    capped) opt="--buffer-events 262144"; names+=("ftail record --buffer-events 262144 (auto)") ;;
    ring) opt="--ring 4M"; names+=("ftail record --ring 4M (auto)") ;;
    keep) opt="--no-drain"; names+=("ftail record --no-drain (auto), every event kept") ;;
    drain) opt="--drain"; names+=("ftail record (auto, drained: the default), every event kept") ;;
    drain1m) opt="--drain=1M"; names+=("ftail record --drain=1M (auto), every event kept") ;;
    *) echo "unknown mode $m (capped, ring, keep, drain, drain1m)" >&2; exit 2 ;;
  esac
  cmds+=("true | env --default-signal=HUP $ftail record -d $tmp/trace $opt -- ../lua -W all.lua >/dev/null 2>&1")
done
hyperfine --style basic --runs "$runs" --export-json "$tmp/runs.json" \
  --prepare "$(after_watchers "$tmp/trace"); rm -rf $tmp/trace $tmp/trace.old" "${cmds[@]}" >/dev/null
printf '%s\n' "${names[@]}" | RUNS_JSON="$tmp/runs.json" python3 -c '
import json, os, statistics, sys
names = sys.stdin.read().splitlines()
r = json.load(open(os.environ["RUNS_JSON"]))["results"]
t = [(min(x["times"]), statistics.median(x["times"])) for x in r]
print("| run | min | median | ratio to untraced (min / median) |\n|---|---|---|---|")
for i, (name, (mn, md)) in enumerate(zip(names, t)):
    ratio = "" if i == 0 else f"{mn/t[0][0]:.2f} / {md/t[0][1]:.2f}"
    print(f"| {name} | {mn:.2f} s | {md:.2f} s | {ratio} |")
'
