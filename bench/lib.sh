# Helpers shared by the benchmark scripts (sourced, not run).
# Builds go to target/bench/; every build is made once and reused.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FTAIL="$ROOT/target/release/ftail"
WORK="$ROOT/target/bench"
mkdir -p "$WORK"

need() {
  for c in "$@"; do
    command -v "$c" >/dev/null ||
      { echo "needs $c (scripts/install-deps installs it)" >&2; exit 1; }
  done
}

build_ftail() {
  (cd "$ROOT" && cargo build --release --quiet -p ftail-cli -p ftail-runtime)
}

# The SQLite amalgamation (sqlite3.c, sqlite3.h, speedtest1.c) in $WORK/sqlite.
sqlite_sources() {
  local d="$WORK/sqlite"
  if [ ! -f "$d/sqlite3.c" ]; then
    "$ROOT/corpus/fetch.sh" sqlite >/dev/null
    rm -rf "$d" && cp -r "$ROOT/corpus/.cache/src/sqlite" "$d"
    (cd "$d" && ./configure --quiet --disable-tcl >/dev/null && make -s sqlite3.c >/dev/null)
  fi
  echo "$d"
}

# build_speedtest NAME "CC..." "CFLAGS": $WORK/speedtest1-NAME
build_speedtest() {
  local out="$WORK/speedtest1-$1" src
  src="$(sqlite_sources)"
  [ -x "$out" ] || $2 $3 -I"$src" -o "$out" "$src/test/speedtest1.c" "$src/sqlite3.c" \
    -lpthread -lm -ldl
  echo "$out"
}

# build_lua NAME "CC..." "CFLAGS": $WORK/lua-NAME/lua
build_lua() {
  local d="$WORK/lua-$1"
  if [ ! -x "$d/lua" ]; then
    "$ROOT/corpus/fetch.sh" lua54 >/dev/null
    rm -rf "$d" && cp -r "$ROOT/corpus/.cache/src/lua54" "$d"
    make -s -C "$d" -j2 CC="$2" CFLAGS="$3 -std=gnu99 -DLUA_USE_LINUX" MYLIBS=-ldl lua >/dev/null
  fi
  echo "$d/lua"
}

# build_zstd NAME "CC..." "CFLAGS": $WORK/zstd-NAME/programs/zstd
build_zstd() {
  local d="$WORK/zstd-$1"
  if [ ! -x "$d/programs/zstd" ]; then
    "$ROOT/corpus/fetch.sh" zstd >/dev/null
    rm -rf "$d" && cp -r "$ROOT/corpus/.cache/src/zstd" "$d"
    make -s -C "$d/programs" -j2 CC="$2" CFLAGS="$3" zstd >/dev/null
  fi
  echo "$d/programs/zstd"
}

# Instructions executed by a command (callgrind's "Collected" count).
instructions() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# Bytes of code (the "text" column of size(1)).
text_size() { size "$1" | awk 'NR == 2 { print $1 }'; }

# Bytes of executable code alone: the .text sections (size -A).
code_size() { size -A "$1" | awk '$1 ~ /^\.text/ { s += $2 } END { print s + 0 }'; }

# Bytes of ftail's site tables: the note and the __ftail_* sections.
tables_size() { size -A "$1" | awk '$1 ~ /^(__ftail_|\.note\.ftail)/ { s += $2 } END { print s + 0 }'; }

# A shell line for hyperfine's --prepare: waits until no `ftail record`
# into trace directory $1 (as the command line names it) is left: its
# watcher may still drain and repack after the program has ended, and
# would otherwise share the next run's CPU and trip its `rm -rf`. Only
# command lines that start with ftail count (hyperfine's own holds the
# commands it runs).
after_watchers() {
  echo "while pgrep -f -- '^[^ ]*/ftail record -d $1 ' >/dev/null; do sleep 0.05; done"
}
