#!/usr/bin/env bash
# Every benchmark in docs/benchmarks.md, one command. Installs what it
# needs when run as root (hyperfine, valgrind, uftrace, clang-19 with its
# XRay runtime), builds ftail, the corpus programs plain and instrumented
# and the peers' builds, runs everything and prints the tables (also kept
# in target/bench/report.md). About 15 minutes on a 2-core machine.
# Usage: bench/run-all.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
if [ "$(id -u)" -eq 0 ]; then scripts/install-deps; fi
report=target/bench/report.md
mkdir -p target/bench
{
  echo "# ftail benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); gcc $(gcc -dumpversion); $(uftrace --version | head -1); $(clang-19 --version | head -1)"
  echo
  echo "## Untraced cost (bench/untraced.sh $runs)"
  bench/untraced.sh "$runs"
  echo
  echo "## Cost per traced event (bench/event-cost.sh $runs)"
  bench/event-cost.sh "$runs"
  echo
  echo "## Against peers (bench/peers.sh $runs)"
  bench/peers.sh "$runs"
  echo
  echo "## Tail-call strategies (bench/tails.sh $runs)"
  bench/tails.sh "$runs"
  echo
  echo "## Compile time (bench/compile-time.sh 3)"
  bench/compile-time.sh 3
} | tee "$report"
