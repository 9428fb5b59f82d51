"""Just enough WebSocket (RFC 6455) for the benchmarks' own clients and upstream:
the opening handshake and frame headers, with no dependency and no copies that
the byte counts do not need."""

from __future__ import annotations

import base64
import hashlib
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # fixed: the benchmarks do not need fresh nonces
MASK = b"\x1f\x2e\x3d\x4c"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def handshake(host: str, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def switched(head: bytes) -> bool:
    """Whether a response head accepts the handshake `handshake()` sent."""
    return head.startswith(b"HTTP/1.1 101") and accept_key(KEY) in head


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, on whole integers rather than byte by byte."""
    size = len(payload)
    if not size:
        return payload
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def frame(opcode: int, payload: bytes, masked: bool = False) -> bytes:
    """One final frame; clients mask theirs (with the fixed key), servers do not."""
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, size)
    if masked:
        return head + MASK + mask(payload, MASK)
    return head + payload


def parse_head(data: bytes, pos: int) -> tuple[int, int, int, bytes] | None:
    """(opcode, payload size, head size, mask key or b"") of the frame at `pos`;
    None while the head is incomplete."""
    have = len(data) - pos
    if have < 2:
        return None
    first, second = data[pos], data[pos + 1]
    size = second & 0x7F
    head = 2
    if size == 126:
        if have < 4:
            return None
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        head = 4
    elif size == 127:
        if have < 10:
            return None
        size = int.from_bytes(data[pos + 2 : pos + 10], "big")
        head = 10
    key = b""
    if second & 0x80:
        if have < head + 4:
            return None
        key = data[pos + head : pos + head + 4]
        head += 4
    return first & 0x0F, size, head, key
