"""100 MB each way through the proxy, with its memory staying flat.

The proxy runs in this process, so the process's resident size is sampled
while the bodies stream; the client side streams too and keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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


async def test_a_slow_reader_holds_the_backend_back(proxy: Proxy, backend: Backend) -> None:
    """The browser reads 1 MiB at a time with pauses; a proxy without backpressure
    would take the whole body from the fast backend into its own memory meanwhile."""
    size = 64 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"GET /bytes/%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (size, proxy.host(backend.id).encode())
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        received = 0
        with peak_rss_growth() as growth:
            while received < size:
                chunk = await asyncio.wait_for(reader.read(1024 * 1024), 10)
                assert chunk, "the proxy closed early"
                received += len(chunk)
                await asyncio.sleep(0.005)  # a slow browser, not a wait for anything
        assert received == size
    finally:
        writer.close()
    assert growth[0] < LIMIT, f"RSS grew by {growth[0] / 2**20:.1f} MiB"


async def test_a_slow_backend_holds_the_uploader_back(proxy: Proxy) -> None:
    """The backend reads 1 MiB at a time with pauses (a small server in the test,
    since the test image reads as fast as it can); the browser sends from its own
    thread as fast as the socket takes it. Without backpressure the proxy would
    hold the difference."""
    size = 64 * 1024 * 1024

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        left = size
        while left:
            chunk = await reader.read(min(left, 1024 * 1024))
            if not chunk:
                break
            left -= len(chunk)
            await asyncio.sleep(0.005)  # a slow backend, not a wait for anything
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d"
            % (len(str(size - left)), size - left)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
    proxy.routes.set_ready("slowread", "127.0.0.1", server.sockets[0].getsockname()[1], None)
    head = b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (
        proxy.host("slowread").encode(),
        size,
    )

    def upload() -> bytes:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.sendall(head)
            for _ in range(size // len(CHUNK)):
                sock.sendall(CHUNK)
            return sock.recv(4096)

    try:
        with peak_rss_growth() as growth:
            answer = await asyncio.wait_for(asyncio.to_thread(upload), 60)
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"%d" % size)
    assert growth[0] < LIMIT, f"RSS grew by {growth[0] / 2**20:.1f} MiB"
