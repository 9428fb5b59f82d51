"""This checkout installed from its compiled wheel, in a folder of its own.

`site()` builds the wheel through deploy/build/wheel.py (cached by source hash,
shared with the image build) and installs it, without dependencies, into
.build/site/HASH; with that folder on PYTHONPATH (and pytest told to append the
checkout to sys.path, not prepend it), `drone.proxy`'s hot modules are the
compiled ones and everything else is the same code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = "PLANE_TEST_COMPILED"  # set to site() for a test run that must import from it


class BuildError(Exception):
    pass


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def site() -> Path:
    wheel = Path(_run([sys.executable, str(ROOT / "deploy/build/wheel.py")]).strip())
    folder = ROOT / ".build" / "site" / wheel.parent.name
    if not (folder / "drone").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(folder),
                str(wheel),
            ]
        )
    if not list((folder / "drone" / "proxy").glob("client.*.so")):
        raise BuildError(
            f"{wheel.name} is pure Python: compiling needs a C compiler and Python's headers"
            " (`make tools` installs gcc and python3-dev)"
        )
    return folder
