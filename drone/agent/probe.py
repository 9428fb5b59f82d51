"""Readiness: a backend is ready once it answers HTTP on its port, whatever the answer.

Probing starts at once and backs off from a few milliseconds to
`max_interval`, so a container that listens quickly is seen quickly; a
refused connection costs almost nothing. Each attempt has its own timeout,
so a container that accepts but never answers cannot stall the probe.
"""

from __future__ import annotations

import asyncio
import contextlib

FIRST_INTERVAL_SECS = 0.005
HTTP_PREFIX = b"HTTP/"


def intervals(max_interval: float, first: float = FIRST_INTERVAL_SECS) -> list[float]:
    """Pauses between attempts: doubling from `first` up to `max_interval`, then flat."""
    steps = []
    pause = min(first, max_interval)
    while pause < max_interval:
        steps.append(pause)
        pause *= 2
    steps.append(max_interval)
    return steps


def request_bytes(host: str, port: int) -> bytes:
    return (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: plane-drone-probe\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


async def answers_http(host: str, port: int, timeout: float) -> bool:
    """One attempt: does something at host:port send back the start of an HTTP response?"""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request_bytes(host, port))
            await writer.drain()
            head = await reader.read(len(HTTP_PREFIX))
            return bool(head) and HTTP_PREFIX.startswith(head)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()


async def wait_until_answering(
    host: str, port: int, *, attempt_timeout: float, max_interval: float
) -> None:
    """Return once the backend answers; runs until cancelled otherwise."""
    pauses = intervals(max_interval)
    attempt = 0
    while not await answers_http(host, port, attempt_timeout):
        await asyncio.sleep(pauses[min(attempt, len(pauses) - 1)])
        attempt += 1
