#!/usr/bin/env bash
# plane-plane:latest as `make images` and the tests build it, with no registry: on the
# Debian base that base.sh makes here, cached by deploy/build-image.sh like the others.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/base.sh"
BUILD_ARGS="--build-arg BASE=plane-debian-base:bookworm" \
    bash "$here/../../build-image.sh" plane "$here"
