#!/usr/bin/env bash
# Builds ftail, compiles the bundled demo through `ftail cc`, runs it,
# lists and verifies its sites, then records it, replays the trace and
# writes it for Perfetto, speedscope and a flame graph (in the current
# directory).
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
# The same trace for the viewers people use.
"$ftail" dump -d "$out/trace" --perfetto -o demo.perfetto-trace
"$ftail" dump -d "$out/trace" --speedscope -o demo.speedscope.json
"$ftail" flame -d "$out/trace" -o demo-flame.svg
cat <<MSG

Open them:
  demo.perfetto-trace    at https://ui.perfetto.dev (Open trace file)
  demo.speedscope.json   with \`npx speedscope demo.speedscope.json\`, or at https://www.speedscope.app
  demo-flame.svg         in a web browser (click a frame to zoom, Ctrl-F to search)
MSG
