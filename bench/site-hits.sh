#!/usr/bin/env bash
# Where an untraced instrumented program's extra instructions go: runs it
# under callgrind (one instruction per line, --dump-instr) and adds up how
# often each kind of site listed by `ftail sites` executed. An exit site
# (the `ret` itself) and a direct tail (the `jmp` itself) are the
# function's own instructions, so only entries and the nop kept before an
# indirect tail add one; the plain build's count is taken too.
# Usage: bench/site-hits.sh PLAIN INSTRUMENTED [ARGS...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need valgrind python3
[ $# -ge 2 ] || { echo "usage: $0 PLAIN INSTRUMENTED [ARGS...]" >&2; exit 2; }
plain=$1 instr=$2
shift 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$FTAIL" sites "$instr" > "$out/sites"
ip=$(instructions "$plain" "$@")
valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
  --callgrind-out-file="$out/cg" "$instr" "$@" >/dev/null 2>"$out/err"
python3 - "$out" "$(realpath "$instr")" "$ip" <<'PY'
import re, sys
out, obj, ip = sys.argv[1], sys.argv[2], int(sys.argv[3])
sites = {}
for line in open(out + "/sites"):
    for kind, addr in re.findall(r"([a-z-]+)@0x([0-9a-f]+)", line):
        sites[int(addr, 16)] = kind
hits = {k: 0 for k in sorted(set(sites.values()))}
total, ob, skip = 0, "", False
for line in open(out + "/cg"):
    if line.startswith("ob="):
        ob = line[3:].strip()
    elif line.startswith("calls="):
        skip = True  # the next cost line is the call's inclusive cost
    elif line.startswith("0x"):
        if skip:
            skip = False
            continue
        addr, _, ir = line.split()[:3]
        total += int(ir)
        if ob == obj and int(addr, 16) in sites:
            hits[sites[int(addr, 16)]] += int(ir)
print(f"instructions: plain {ip:,}, instrumented {total:,}: {total - ip:+,} ({total / ip:.4f}x)")
for k, v in hits.items():
    print(f"  {k} sites executed {v:,} times")
e, t = hits.get("entry", 0), hits.get("tail-indirect", 0)
if e:
    print(f"  per call (an entry executed): {(total - ip) / e:.3f} extra instructions: the entry's nop, "
          f"{t / e:.3f} indirect tails' nops, {(total - ip - e - t) / e:+.3f} elsewhere")
PY
