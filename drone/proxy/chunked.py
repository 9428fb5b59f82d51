"""The chunked transfer coding, written alike toward backends and browsers."""

from __future__ import annotations

LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> list[bytes]:
    """One body piece as a chunk (nothing for an empty piece: that would end the body)."""
    if not data:
        return []
    return [b"%x\r\n" % len(data), data, b"\r\n"]
