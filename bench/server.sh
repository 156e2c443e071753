#!/usr/bin/env bash
# A real server's throughput before, while and after ftail is attached:
# Redis (Debian's `redis` source package, built through `ftail cc gcc -O2`
# with libc's malloc) under its own load generator, `redis-benchmark`
# (from the same build, never traced), on loopback. Each round starts a
# fresh server for each recording mode and measures, in order:
#   before    the server untraced;
#   attached  while `ftail record -p` records every function of it
#             (everything kept, and again with `--ring 16M`);
#   after     once ftail has detached (goal: after = before within noise).
# Each measurement is one `redis-benchmark -t set,get -n REQUESTS -c 50`
# run, after one unmeasured run on each fresh server; requests/s is the
# mean of its SET and GET rates.
# Usage: bench/server.sh [ROUNDS] [REQUESTS]   (default 3, 100000)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
rounds=${1:-3}
requests=${2:-100000}
need gcc make python3
build_ftail

redis="$WORK/redis"
if [ ! -x "$redis/src/redis-server" ]; then
  "$ROOT/corpus/fetch.sh" redis >/dev/null
  rm -rf "$redis" && cp -r "$ROOT/corpus/.cache/src/redis" "$redis"
  # `all`, not two targets: each would build the bundled libraries at once.
  make -s -C "$redis" -j"$(nproc)" MALLOC=libc BUILD_TLS=no USE_SYSTEMD=no \
    CC="$FTAIL cc gcc" OPTIMIZATION=-O2 all >/dev/null 2>&1
fi

tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; fi || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_server: a fresh server on a free loopback port, no persistence.
start_server() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$redis/src/redis-server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$tmp/server.log" &
  server_pid=$!
  until [ "$("$redis/src/redis-cli" -p "$port" ping 2>/dev/null)" = PONG ]; do sleep 0.1; done
  # One run unmeasured: the first SETs create the keys the later ones
  # overwrite, and would make "before" the slowest.
  rate >/dev/null
}

stop_server() {
  kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# rate: requests/s of one load run (mean of SET and GET).
rate() {
  "$redis/src/redis-benchmark" -p "$port" -t set,get -n "$requests" -c 50 --csv 2>/dev/null |
    python3 -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if r and r[0] in ("SET", "GET")]
print(round(sum(float(r[1]) for r in rows) / len(rows)))'
}

# attached MODE-OPTIONS...: the rate while ftail records the server.
attached() {
  rm -rf "$tmp/trace"
  "$FTAIL" record -p "$server_pid" -d "$tmp/trace" "$@" 2> "$tmp/record.err" &
  local rec=$!
  until grep -q "Ctrl-C detaches" "$tmp/record.err" 2>/dev/null; do
    kill -0 "$rec" 2>/dev/null || { cat "$tmp/record.err" >&2; exit 1; }
    sleep 0.05
  done
  rate
  kill -INT "$rec"
  wait "$rec" || { cat "$tmp/record.err" >&2; exit 1; }
  events=$("$FTAIL" info -d "$tmp/trace" --events 2>/dev/null |
    sed -n 's/^ *duration .*(\([0-9]*\) events.*/\1/p' | head -n1)
  echo "    $* recorded ${events:-?} events" >&2
}

echo "| round | mode | before | attached | after | attached / before | after / before |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  for mode in keep ring; do
    start_server
    before=$(rate)
    if [ "$mode" = keep ]; then during=$(attached); else during=$(attached --ring 16M); fi
    after=$(rate)
    stop_server
    python3 -c "
b, d, a = $before, $during, $after
print(f'| $r | $mode | {b} | {d} | {a} | {d/b:.2f} | {a/b:.2f} |')"
  done
done
echo
echo "requests/s; redis $(sed -n 's/.*REDIS_VERSION "\(.*\)"/\1/p' "$redis/src/version.h"), \
$requests requests per run, 50 clients; cores: $(nproc); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
