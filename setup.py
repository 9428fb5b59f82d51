"""Packaging, with the proxy's hot modules compiled to C when asked.

`PLANE_COMPILE=1 pip wheel .` compiles the modules below with mypyc (the code is
`mypy --strict` already, so it compiles as written) and still ships every `.py`:
where no C compiler or Python headers are found, the build warns and the wheel
is pure Python, which runs the same. Editable installs stay pure, so that
edited sources are what runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

# What every request passes through (measured in BENCHMARKS.md); the rest of the
# project gains nothing measurable from compiling.
HOT_MODULES = [
    "drone/proxy/answers.py",
    "drone/proxy/auth.py",
    "drone/proxy/chunked.py",
    "drone/proxy/client.py",
    "drone/proxy/context.py",
    "drone/proxy/cycle.py",
    "drone/proxy/exchange.py",
    "drone/proxy/flow.py",
    "drone/proxy/headers.py",
    "drone/proxy/metrics.py",
    "drone/proxy/request_reader.py",
    "drone/proxy/response_reader.py",
    "drone/proxy/response_writer.py",
    "drone/proxy/timer.py",
    "drone/proxy/tunnel.py",
    "drone/proxy/upstream.py",
    "drone/routes.py",
]


def warn(message: str) -> None:
    print(f"plane setup: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Build the compiled modules, or none of them: a wheel with some but not the
    shared library they all load would not import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, a compiler error
            warn(f"compiling failed ({exc}); the wheel is pure Python")
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            self.extensions = []


def compiled_extensions() -> list[object]:
    if os.environ.get("PLANE_COMPILE", "") not in ("1", "true", "yes"):
        return []
    if "editable_wheel" in sys.argv:
        warn("an editable install is not compiled (it would shadow the sources)")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        warn("mypyc (from mypy) is not installed; the wheel is pure Python")
        return []
    here = Path(__file__).parent
    os.chdir(here)  # mypyc names modules by their paths from here
    return list(mypycify(HOT_MODULES, opt_level="3"))


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
