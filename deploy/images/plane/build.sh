#!/usr/bin/env bash
# The project and every dependency as wheels in ./wheels, for the Dockerfile to install
# with no network. Run by deploy/build-image.sh before `docker build`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
rm -rf "$here/wheels"
"$python" -m pip wheel --quiet --wheel-dir "$here/wheels" "$root"
