"""setuptools' build backend, asking for what compiling needs only when it is asked for.

With PLANE_COMPILE=1 (see setup.py) an isolated wheel build also installs mypy,
whose mypyc compiles, and the project's own dependencies, against whose types
mypyc checks the modules. A pure build asks for setuptools alone.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the rest of the backend, unchanged)


def _compile_requires() -> list[str]:
    if os.environ.get("PLANE_COMPILE", "") not in ("1", "true", "yes"):
        return []
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    return ["mypy>=1.10", *project["dependencies"]]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*build_meta.get_requires_for_build_wheel(config_settings), *_compile_requires()]
