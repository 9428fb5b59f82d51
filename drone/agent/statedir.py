"""What a drone keeps on its own disk: its ID and whether it is draining.

Everything else about its backends lives in Docker labels. Writes go to a
temporary file renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import msgspec

from shared.ids import DRONE_ID_PATTERN, PATTERN_MEANINGS, is_valid_drone_id, new_id

DRONE_ID_FILE = "drone_id"
DRAIN_FILE = "drain.json"


class StateDirError(Exception):
    """The state directory cannot be used; the message says which file and why."""


class DrainRecord(msgspec.Struct, kw_only=True):
    draining: bool = False


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise StateDirError(f"cannot write {path}: {exc}") from None


def drone_id(state_dir: Path, configured: str | None) -> str:
    """The configured ID, else the one kept in `state_dir`, else a new one kept there."""
    if configured is not None:
        if not is_valid_drone_id(configured):
            raise StateDirError(f"drone_id {configured!r} {PATTERN_MEANINGS[DRONE_ID_PATTERN]}")
        return configured
    path = state_dir / DRONE_ID_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    except OSError as exc:
        raise StateDirError(f"cannot read {path}: {exc}") from None
    if kept:
        if not is_valid_drone_id(kept):
            raise StateDirError(
                f"{path} holds {kept!r}: a drone ID {PATTERN_MEANINGS[DRONE_ID_PATTERN]}"
            )
        return kept
    fresh = new_id()
    _write(path, f"{fresh}\n".encode())
    return fresh


def load_draining(state_dir: Path) -> bool:
    path = state_dir / DRAIN_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=DrainRecord).draining
    except FileNotFoundError:
        return False
    except (OSError, msgspec.DecodeError) as exc:
        raise StateDirError(f"cannot read {path}: {exc}") from None


def save_draining(state_dir: Path, draining: bool) -> None:
    _write(state_dir / DRAIN_FILE, msgspec.json.encode(DrainRecord(draining=draining)))


def discover_ip() -> str:
    """The address of the interface that holds the default route (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing decision only
        return str(probe.getsockname()[0])
    return "127.0.0.1"
