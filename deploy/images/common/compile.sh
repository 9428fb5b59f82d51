#!/usr/bin/env bash
# Compile DIR/NAME.c with the shared HTTP and WebSocket code of this folder into
# DIR/NAME: one static, stripped binary for a FROM-scratch image.
#
#   deploy/images/common/compile.sh DIR NAME
#
# Files DIR holds can be embedded with the assembler's .incbin (DIR is on its
# include path). Needs gcc and static glibc (Debian: apt-get install gcc libc6-dev).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DIR NAME" >&2
    exit 2
fi
dir=$(cd "$1" && pwd)
name=$2
common=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=${CC:-gcc}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "compile.sh: the C compiler '$cc' is missing; install gcc and static glibc (Debian: apt-get install gcc libc6-dev)" >&2
    exit 1
fi

tmp="$dir/$name.$$.tmp"
trap 'rm -f "$tmp"' EXIT
if ! "$cc" -std=c11 -O2 -static -pthread -s -Wall -Wextra \
    -I "$common" -Wa,-I,"$dir" -o "$tmp" "$dir/$name.c" "$common"/*.c; then
    echo "compile.sh: compiling $name.c failed (a static build needs libc.a: Debian's libc6-dev)" >&2
    exit 1
fi
mv "$tmp" "$dir/$name"
echo "compile.sh: compiled $dir/$name"
