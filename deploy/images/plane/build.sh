#!/usr/bin/env bash
# The project (its hot modules compiled, see setup.py) and every dependency as wheels
# in ./wheels, for the Dockerfile to install with no network. Run by
# deploy/build-image.sh before `docker build`. The wheels are for this host's Python:
# the image's BASE must have the same version.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
wheel=$("$python" "$root/deploy/build/wheel.py")
rm -rf "$here/wheels"
mkdir -p "$here/wheels"
cp "$wheel" "$here/wheels/"
"$python" -m pip wheel --quiet --wheel-dir "$here/wheels" "$wheel"
