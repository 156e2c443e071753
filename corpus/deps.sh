#!/usr/bin/env bash
# Install (as root, Debian 12) what corpus/fetch.sh and corpus/build.sh need.
# Optional: clang-19 / g++ are only needed to build with those compilers.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    ca-certificates curl xz-utils bzip2 dpkg-dev \
    gcc g++ make file \
    libreadline-dev zlib1g-dev liblzma-dev tcl \
    autoconf automake libtool \
    "$@"
