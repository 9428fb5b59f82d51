#!/usr/bin/env bash
# ensure-packages.sh COMMAND=PACKAGE...: install the Debian package for each
# command that is missing (as root on Debian), or say which ones to install.
set -euo pipefail

missing=()
for pair in "$@"; do
    cmd=${pair%%=*}
    pkg=${pair#*=}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ]; then
    echo "ensure-packages: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
else
    echo "ensure-packages: please install these packages: ${missing[*]}" >&2
    exit 1
fi
