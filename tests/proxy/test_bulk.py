"""100 MB each way through the proxy, with its memory staying flat.

The proxy runs in this process, so the process's resident size is sampled
while the bodies stream; the client side streams too and keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from tests.proxy.conftest import Backend, Proxy

SIZE = 100 * 1024 * 1024
CHUNK = bytes(1024 * 1024)
LIMIT = 30 * 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Samples RSS every 10 ms; yields [growth] filled in on exit."""
    base = rss()
    peak = [base]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss())
            await asyncio.sleep(0.01)

    task = asyncio.get_running_loop().create_task(sample())
    result: list[int] = []
    try:
        yield result
    finally:
        task.cancel()
        peak[0] = max(peak[0], rss())
        result.append(peak[0] - base)


async def body() -> AsyncIterator[bytes]:
    for _ in range(SIZE // len(CHUNK)):
        yield CHUNK


async def test_100_mb_upload_and_download_keep_memory_flat(proxy: Proxy, backend: Backend) -> None:
    host = {"Host": proxy.host(backend.id)}
    async with proxy.client() as client:
        await client.get("/", headers=host)  # warm up: the pool, h11, httpx
        with peak_rss_growth() as growth:
            upload = await client.post("/", headers=host, content=body())
            assert upload.status_code == 200
            assert int(upload.text.strip()) == SIZE
            received = 0
            async with client.stream("GET", f"/bytes/{SIZE}", headers=host) as download:
                assert download.status_code == 200
                async for chunk in download.aiter_raw():
                    received += len(chunk)
            assert received == SIZE
    assert growth[0] < LIMIT, f"RSS grew by {growth[0] / 2**20:.1f} MiB"
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
