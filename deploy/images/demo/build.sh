#!/usr/bin/env bash
# Compile the demo backend, with index.html embedded, into this folder (see ../common/compile.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../common/compile.sh" "$here" demo
