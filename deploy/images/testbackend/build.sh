#!/usr/bin/env bash
# Compile the test backend into this folder: one static binary for a FROM-scratch image.
# Needs gcc and static glibc (Debian: apt-get install gcc libc6-dev).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=${CC:-gcc}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build.sh: the C compiler '$cc' is missing; install gcc and static glibc (Debian: apt-get install gcc libc6-dev)" >&2
    exit 1
fi

tmp="$here/testbackend.$$.tmp"
trap 'rm -f "$tmp"' EXIT
if ! "$cc" -std=c11 -O2 -static -pthread -s -Wall -Wextra -o "$tmp" "$here/testbackend.c"; then
    echo "build.sh: compiling testbackend.c failed (a static build needs libc.a: Debian's libc6-dev)" >&2
    exit 1
fi
mv "$tmp" "$here/testbackend"
echo "build.sh: compiled $here/testbackend"
