#!/usr/bin/env bash
# Builds ftail, compiles the bundled demo through `ftail cc`, runs it,
# lists and verifies its sites, then records it and replays the trace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ftail-cli -p ftail-runtime
ftail="$PWD/target/release/ftail"
out="$PWD/target/demo"
mkdir -p "$out"
"$ftail" cc "${CC:-cc}" -O2 -g -o "$out/demo" demo/demo.c
echo "built $out/demo with \`ftail cc ${CC:-cc}\`; running it untraced:"
"$out/demo" 10
"$ftail" sites "$out/demo"
"$ftail" record -d "$out/trace" -- "$out/demo" 3
"$ftail" replay -d "$out/trace"
