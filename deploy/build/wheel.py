"""Build this checkout's wheel once per state of its sources, and print its path.

    python3 deploy/build/wheel.py [--pure]

The wheel is compiled (PLANE_COMPILE=1, see setup.py) unless --pure is given,
and kept under .build/wheels/HASH/, where HASH covers every file that goes
into it; the image build and the tests of the compiled proxy share it. The
sources are copied to a fresh folder first, so nothing left in ./build by an
earlier build (a module since removed, say) can reach the wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "deploy/build/backend/compile_backend.py",
]
PACKAGES = ["shared", "controller", "drone"]
KEEP = 3  # the newest wheels kept; older ones are removed


def sources() -> list[Path]:
    found = [ROOT / name for name in FILES]
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and path.suffix in (".py", ".typed")
            ):
                found.append(path)
    return found


def source_hash(pure: bool) -> str:
    digest = hashlib.sha256(b"pure" if pure else b"compiled")
    for path in sources():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def build(pure: bool) -> Path:
    cache = ROOT / ".build" / "wheels"
    home = cache / source_hash(pure)
    done = sorted(home.glob("plane-*.whl"))
    if done:
        return done[0]
    with tempfile.TemporaryDirectory(prefix="plane-wheel-") as tmp:
        tree = Path(tmp) / "src"
        for path in sources():
            target = tree / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        out = Path(tmp) / "out"
        env = {**os.environ, "PLANE_COMPILE": "0" if pure else "1"}
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(out),
            str(tree),
        ]
        subprocess.run(command, env=env, check=True)
        (wheel,) = out.glob("plane-*.whl")
        home.mkdir(parents=True, exist_ok=True)
        shutil.move(wheel, home / wheel.name)
    for old in sorted(cache.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return home / wheel.name


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="deploy/build/wheel.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--pure", action="store_true", help="do not compile (PLANE_COMPILE=0)")
    print(build(parser.parse_args().pure))


if __name__ == "__main__":
    main()
