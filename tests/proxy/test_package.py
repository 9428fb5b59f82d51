"""The proxy package's map (its docstring) names every module it has."""

from __future__ import annotations

from pathlib import Path

import drone.proxy


def test_the_package_map_names_every_module() -> None:
    here = Path(drone.proxy.__file__).parent
    modules = {p.stem for p in here.glob("*.py") if p.stem != "__init__"}
    doc = drone.proxy.__doc__ or ""
    missing = sorted(m for m in modules if f"`{m}`" not in doc)
    assert not missing, f"drone/proxy/__init__.py does not name {missing}"
