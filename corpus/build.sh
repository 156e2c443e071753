#!/usr/bin/env bash
# Build and test one corpus project with a configurable C compiler.
# Usage: [CC=...] [CXX=...] [CFLAGS=...] [JOBS=N] corpus/build.sh NAME BUILD_DIR
#   NAME: lua54 | jq | sqlite | zstd | zlib
#   CC may be a multi-word command, e.g. CC="ftail cc gcc" or
#   CC="/path/to/ftail cc clang-19".  For lua54, CC may also be a C++
#   compiler (g++, clang++-19): Lua is then compiled as C++.
# BUILD_DIR is wiped and refilled from corpus/.cache/src/NAME (fetched on
# demand via corpus/fetch.sh).  Exits non-zero if the build or tests fail;
# on success prints "binary: /abs/path" lines and "corpus NAME: PASS".
#
# TEST_ONLY=1 skips the copy and the build and runs only the test suite in
# an existing BUILD_DIR: with the environment of the caller, so that
# `LD_PRELOAD=libftail_runtime.so FTAIL_DIR=...` traces every process of the
# suite that was built instrumented.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { echo "usage: [CC=..] [CFLAGS=..] $0 {lua54|jq|sqlite|zstd|zlib} BUILD_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
NAME="$1"
case "$NAME" in lua54|jq|sqlite|zstd|zlib) ;; *) usage ;; esac

CC="${CC:-cc}"
CXX="${CXX:-c++}"
CFLAGS="${CFLAGS:--O2 -g}"
JOBS="${JOBS:-2}"
export CC CXX CFLAGS

SRC="$HERE/.cache/src/$NAME"
[ -d "$SRC" ] || "$HERE/fetch.sh" "$NAME"

# Build directory (absolute path), refusing obviously dangerous ones;
# emptied and refilled unless only the tests are to run.
mkdir -p "$2"
B="$(cd "$2" && pwd -P)"
case "$B" in /|/root|/home|/usr|/etc|/tmp|/work|"$HERE"|"$HERE"/.cache*) echo "refusing BUILD_DIR=$B" >&2; exit 2 ;; esac
if [ "${TEST_ONLY:-0}" != 1 ]; then
    find "$B" -mindepth 1 -delete
    cp -a "$SRC/." "$B/"
fi
# Keep temp files of the test suites inside BUILD_DIR.
mkdir -p "$B/.tmp"
export TMPDIR="$B/.tmp"

echo "corpus $NAME: CC=$CC CFLAGS=$CFLAGS JOBS=$JOBS in $B"
cd "$B"

# True if $CC compiles .c files as C++ (g++, clang++, ...).
cc_is_cxx() {
    printf '#ifdef __cplusplus\nFTAIL_IS_CXX\n#endif\n' > "$TMPDIR/probe.c"
    local out
    out="$($CC -E "$TMPDIR/probe.c" 2>/dev/null || true)"
    case "$out" in *FTAIL_IS_CXX*) return 0 ;; *) return 1 ;; esac
}

BINS=()

case "$NAME" in
lua54)
    if [ "${TEST_ONLY:-0}" != 1 ]; then
        # The sdist ships the Lua developers' makefile (not the release one):
        # reproduce "make linux-readline" of the release makefile by hand.
        LIBFLAGS=""
        if cc_is_cxx; then
            # C++ build: Lua uses C++ exceptions instead of longjmp, and its API
            # gets C++ linkage.  The test modules in testes/libs are then also
            # compiled as C++; give the functions looked up with dlsym() C
            # linkage through a forced-included prelude (a later definition
            # inherits the linkage of the first declaration).
            STD=""
            echo "corpus lua54: $CC is a C++ compiler, building Lua as C++"
            cat > "$B/testes/libs/cxx-prelude.h" <<'PRELUDE'
    #include "lua.h"
    extern "C" {
    int lib1_export (lua_State *L);
    int onefunction (lua_State *L);
    int anotherfunc (lua_State *L);
    int luaopen_lib1_sub (lua_State *L);
    int luaopen_lib11 (lua_State *L);
    int luaopen_lib2 (lua_State *L);
    int luaopen_lib21 (lua_State *L);
    }
PRELUDE
            LIBFLAGS="-include $B/testes/libs/cxx-prelude.h"
        else
            STD="-std=gnu99"
        fi
        make -j"$JOBS" CC="$CC" \
            CFLAGS="-Wall $CFLAGS $STD -DLUA_USE_LINUX -DLUA_USE_READLINE" \
            MYLDFLAGS="-Wl,-E" MYLIBS="-ldl -lreadline" \
            lua
        # C modules used by testes/attrib.lua (must be compiled by the same
        # compiler: as C++ the Lua API has C++ linkage).
        make -C testes/libs -j"$JOBS" CC="$CC" \
            CFLAGS="-Wall $CFLAGS $STD -I../../ $LIBFLAGS -fPIC -shared"
        # testes/main.lua ("testing Ctrl C") has a race: it starts
        # `lua -e "...print(12)..." & echo $!` and expects the shell's pid line
        # before the script's "12".  On a loaded machine Lua can win; the test
        # then fails *and* leaves a Lua process spinning forever in the
        # background.  Delay the background Lua a little (same pid via exec).
        sed -i 's|%s -e "%s" & echo \$!|(sleep 0.5; exec %s -e "%s") \& echo $!|' testes/main.lua
        grep -qF '(sleep 0.5; exec %s -e "%s") & echo $!' testes/main.lua ||
            { echo "corpus lua54: could not patch testes/main.lua" >&2; exit 1; }
    fi
    # Output to a file, not a pipe: a stray background process holding the
    # pipe open could otherwise hang the build.
    rc=0
    (
        cd testes
        ulimit -S -s 1100
        true | env --default-signal=HUP ../lua -W all.lua
    ) > "$B/test.log" 2>&1 || rc=$?
    cat "$B/test.log"
    [ "$rc" -eq 0 ] || { echo "corpus lua54: all.lua exited with status $rc" >&2; exit 1; }
    grep -q '^final OK' "$B/test.log" || { echo "corpus lua54: no 'final OK' line" >&2; exit 1; }
    BINS=("$B/lua" "$B"/testes/libs/*.so)
    ;;
jq)
    if [ "${TEST_ONLY:-0}" != 1 ]; then
        [ -x configure ] || autoreconf -i
        ./configure --with-oniguruma=builtin --disable-docs --disable-shared \
            CC="$CC" CFLAGS="$CFLAGS"
        make -j"$JOBS"
    fi
    make -j"$JOBS" check || { cat test-suite.log tests/*.log 2>/dev/null | tail -n 200; exit 1; }
    BINS=("$B/jq")
    ;;
sqlite)
    if [ "${TEST_ONLY:-0}" != 1 ]; then
        ./configure --disable-tcl CC="$CC" CFLAGS="$CFLAGS"
        make -j"$JOBS" fuzzcheck sessionfuzz speedtest1 threadtest3
    fi
    make fuzztest
    ./speedtest1 --size 50
    ./threadtest3 walthread5 cgt_pager_1 lookaside1
    # stress1 starts from whatever test.db holds: after lookaside1 that is
    # a WITHOUT ROWID t1, and its DELETE ... WHERE rowid fails with "no
    # such column: rowid" whenever it runs before stress1's own DROP TABLE
    # (a race in the upstream test's order, seen traced and under load).
    # So it gets a fresh database, as walthread5 and lookaside1 do.
    rm -f test.db test.db-wal test.db-shm test.db-journal
    ./threadtest3 stress1 shared1
    BINS=("$B/fuzzcheck" "$B/sessionfuzz" "$B/speedtest1" "$B/threadtest3")
    ;;
zstd)
    make -j"$JOBS" CC="$CC" CFLAGS="$CFLAGS" check
    for f in programs/zstd programs/zstd-* tests/datagen tests/fullbench tests/fuzzer \
             tests/zstreamtest tests/paramgrill tests/decodecorpus tests/poolTests; do
        if [ -f "$f" ] && [ -x "$f" ]; then BINS+=("$B/$f"); fi
    done
    ;;
zlib)
    [ "${TEST_ONLY:-0}" = 1 ] || CC="$CC" CFLAGS="$CFLAGS" ./configure
    make -j"$JOBS" test
    for f in example minigzip examplesh minigzipsh example64 minigzip64 libz.so.*.*.*; do
        if [ -f "$f" ]; then BINS+=("$B/$f"); fi
    done
    ;;
esac

for f in "${BINS[@]}"; do
    [ -e "$f" ] || { echo "corpus $NAME: expected binary missing: $f" >&2; exit 1; }
    echo "binary: $f"
done
echo "corpus $NAME: PASS"
