#!/usr/bin/env bash
# Builds ftail, compiles the bundled demo through `ftail cc`, runs it, and
# lists and verifies its sites.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ftail-cli
ftail="$PWD/target/release/ftail"
out="$PWD/target/demo"
mkdir -p "$out"
"$ftail" cc "${CC:-cc}" -O2 -g -o "$out/demo" demo/demo.c
echo "built $out/demo with \`ftail cc ${CC:-cc}\`; running it untraced:"
"$out/demo" 10
"$ftail" sites "$out/demo"
