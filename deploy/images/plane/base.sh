#!/usr/bin/env bash
# A Debian base image with Python for the Plane image, made here with no registry:
# mmdebstrap builds a minimal bookworm root file system from Debian's packages and
# `docker import` turns it into plane-debian-base:bookworm. Kept once made.
set -euo pipefail
image=plane-debian-base:bookworm
read -r -a docker <<<"${DOCKER:-docker}"
if "${docker[@]}" image inspect "$image" >/dev/null 2>&1; then
    echo "$image is there"
    exit 0
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/../../ensure-packages.sh" mmdebstrap=mmdebstrap
tar=$(mktemp --suffix=.tar)
trap 'rm -f "$tar"' EXIT
echo "base: making $image with mmdebstrap (a minute or two, once)"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$tar" http://deb.debian.org/debian
"${docker[@]}" import --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
echo "base: made $image"
