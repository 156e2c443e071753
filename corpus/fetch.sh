#!/usr/bin/env bash
# Fetch the source of one corpus project into corpus/.cache/src/NAME/.
# Usage: corpus/fetch.sh NAME     (NAME: lua54 jq sqlite zstd zlib redis)
# (redis is used only by bench/server.sh, not by the tests)
# Idempotent: does nothing if corpus/.cache/src/NAME already exists.
# Downloads are cached under corpus/.cache/dl/. Sources come through the
# ordinary clients and their own configuration only: pip for PyPI sdists,
# apt-get source for Debian packages.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/.cache"
DL="$CACHE/dl"
SRC="$CACHE/src"

usage() { echo "usage: $0 {lua54|jq|sqlite|zstd|zlib|redis}" >&2; exit 2; }
[ $# -eq 1 ] || usage
NAME="$1"
case "$NAME" in lua54|jq|sqlite|zstd|zlib|redis) ;; *) usage ;; esac

# Make sure the cache is ignored by git (append once).
GITIGNORE="$HERE/../.gitignore"
if ! grep -qxF 'corpus/.cache/' "$GITIGNORE" 2>/dev/null; then
    echo 'corpus/.cache/' >> "$GITIGNORE"
fi

DEST="$SRC/$NAME"
if [ -d "$DEST" ]; then
    echo "fetch $NAME: already present in $DEST"
    exit 0
fi
mkdir -p "$DL" "$SRC"
TMP="$(mktemp -d "$SRC/.tmp-$NAME.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# pip_sdist PKG VERSION -> prints the path of the cached sdist tarball.
# pip fetches it from whatever index pip is configured to use (pip.conf,
# PIP_INDEX_URL, ...); it prepares the sdist's metadata, which takes about
# a minute, once.
pip_sdist() {
    local pkg="$1" ver="$2" dir="$DL/pypi"
    local f="$dir/$pkg-$ver.tar.gz"
    if [ ! -f "$f" ]; then
        mkdir -p "$dir"
        python3 -m pip download --quiet --no-deps --no-binary :all: \
            "$pkg==$ver" -d "$dir" >&2
    fi
    [ -f "$f" ] || { echo "fetch: $f missing after pip download" >&2; exit 1; }
    echo "$f"
}

# Make `apt-get source` work: add deb-src entries for the non-security
# Debian suites configured on this machine, then apt-get update.
ensure_deb_src() {
    local probe="$1"
    if apt-cache showsrc --only-source "$probe" 2>/dev/null | grep -q '^Package:'; then
        return 0
    fi
    local out=/etc/apt/sources.list.d/ftail-src.sources
    if [ ! -f "$out" ]; then
        local tmp
        tmp="$(mktemp)"
        # deb822 files: copy every "Types: deb" stanza as deb-src,
        # dropping *-security suites (and stanzas that only have those).
        if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
            awk '
                function flush() {
                    if (isdeb && uris != "" && suites != "") {
                        printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", uris, suites, comps
                        if (signed != "") printf "Signed-By: %s\n", signed
                        printf "\n"
                    }
                    isdeb = 0; uris = ""; suites = ""; comps = "main"; signed = ""
                }
                BEGIN { flush() }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "types:"      { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1; next }
                tolower($1) == "uris:"       { uris = ""; for (i = 2; i <= NF; i++) if ($i !~ /security/) uris = uris (uris == "" ? "" : " ") $i; next }
                tolower($1) == "suites:"     { suites = ""; for (i = 2; i <= NF; i++) if ($i !~ /-security$|\/updates$/) suites = suites (suites == "" ? "" : " ") $i; next }
                tolower($1) == "components:" { comps = $2; for (i = 3; i <= NF; i++) comps = comps " " $i; next }
                tolower($1) == "signed-by:"  { signed = $2; next }
                END { flush() }
            ' $(ls /etc/apt/sources.list.d/*.sources | grep -v ftail-src) >> "$tmp"
        fi
        # one-line format (/etc/apt/sources.list, *.list)
        local f
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk '$1 == "deb" && $0 !~ /security/ { $1 = "deb-src"; print }' "$f" |
            while read -r line; do
                # convert to a deb822 stanza only when it is simple (no [options])
                set -- $line
                case "$2" in \[*) continue ;; esac
                printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' \
                    "$2" "$3" "${*:4}" >> "$tmp"
            done
        done
        if [ ! -s "$tmp" ]; then
            echo "fetch: could not derive a deb-src entry from the apt sources" >&2
            rm -f "$tmp"; exit 1
        fi
        install -m 0644 "$tmp" "$out"
        rm -f "$tmp"
        echo "fetch: wrote $out" >&2
    fi
    apt-get update -q >&2
}

# apt_source SRCPKG -> extracts Debian source package SRCPKG into $DEST
apt_source() {
    local pkg="$1" dir="$DL/apt/$1"
    ensure_deb_src "$pkg"
    mkdir -p "$dir"
    if ! ls "$dir"/*.dsc >/dev/null 2>&1; then
        rm -rf "$dir.part" && mkdir -p "$dir.part"
        (cd "$dir.part" && apt-get source --download-only -q "$pkg" >&2)
        chmod -R a+rX "$dir.part"
        rm -rf "$dir" && mv "$dir.part" "$dir"
    fi
    local dsc
    dsc="$(ls "$dir"/*.dsc | head -n1)"
    dpkg-source --no-check -x "$dsc" "$TMP/x" >&2
    mv "$TMP/x" "$DEST"
}

case "$NAME" in
lua54)
    sdist="$(pip_sdist lupa 2.8)"
    tar -xzf "$sdist" -C "$TMP" lupa-2.8/third-party/lua54
    rm -f "$TMP/lupa-2.8/third-party/lua54/.git"  # submodule pointer, useless here
    mv "$TMP/lupa-2.8/third-party/lua54" "$DEST"
    ;;
jq)
    sdist="$(pip_sdist jq 1.13.0)"
    tar -xzf "$sdist" -C "$TMP" jq-1.13.0/deps/jq-1.8.2.tar.gz
    tar -xzf "$TMP/jq-1.13.0/deps/jq-1.8.2.tar.gz" -C "$TMP"
    mv "$TMP/jq-1.8.2" "$DEST"
    ;;
sqlite) apt_source sqlite3 ;;
zstd)   apt_source libzstd ;;
zlib)   apt_source zlib ;;
redis)  apt_source redis ;;
esac
echo "fetch $NAME: done -> $DEST"
