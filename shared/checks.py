"""Checks of request contents that a type alone cannot express.

Shared by the controller (which answers `InvalidRequest` naming the field)
and the drone (which refuses the spawn), so that both judge a request alike
and nothing the engine would choke on reaches it. Each returns why a value is
refused, or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared import reference

MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs", "npipe"})
MAX_PATH_LENGTH = 4096


def image_problem(image: str) -> str | None:
    return reference.problem(image)


def env_problem(env: Mapping[str, str]) -> str | None:
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return f"{name[:80]!r} is not a variable name"
        if "\0" in value:
            return f"{name}: contains a NUL byte"
    return None


def mount_problem(mount: Mapping[str, Any]) -> str | None:
    """The shape of one Docker `Mount` object (whether mounts are allowed is the drone's call)."""
    kind = mount.get("Type")
    if kind not in MOUNT_TYPES:
        return f"Type must be one of {', '.join(sorted(MOUNT_TYPES))}"
    target = mount.get("Target")
    if not isinstance(target, str) or not target.startswith("/"):
        return "Target must be an absolute path"
    if len(target) > MAX_PATH_LENGTH or "\0" in target:
        return f"Target must be a path of at most {MAX_PATH_LENGTH} characters without NUL"
    source = mount.get("Source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_PATH_LENGTH):
        return f"Source must be a string of at most {MAX_PATH_LENGTH} characters"
    return None
