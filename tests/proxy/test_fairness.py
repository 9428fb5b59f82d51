"""One browser flooding 1-byte chunks must not starve the others, nor the backend.

The flood comes from a thread over a blocking socket, as fast as the proxy takes
it. A second client keeps asking another backend; a ticker in the loop records how
late its wake-ups are. The sink backend counts the chunks it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from tests.proxy.conftest import Proxy, read_response

pytestmark = pytest.mark.timeout(120)

CHUNK = b"1\r\na\r\n"
FLOOD_CHUNKS = 100_000  # 600 KB on the wire, 100 KB of body
BLOCK = CHUNK * 10_000


class Sink:
    """A backend reading one chunked request, counting chunks and body bytes."""

    def __init__(self) -> None:
        self.chunks = 0
        self.body = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            self.chunks += 1
            self.body += len(await reader.readexactly(size))
            await reader.readexactly(2)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(self.body)), self.body)
        )
        await writer.drain()
        writer.close()


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A backend answering every request on its socket with a small body."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()


async def test_a_flood_of_tiny_chunks_is_coalesced_and_shares_the_loop(proxy: Proxy) -> None:
    sink = Sink()
    sink_server = await asyncio.start_server(sink.serve, "127.0.0.1", 0)
    hello_server = await asyncio.start_server(hello, "127.0.0.1", 0)
    for name, server in (("sink", sink_server), ("hello", hello_server)):
        proxy.routes.set_ready(name, "127.0.0.1", server.sockets[0].getsockname()[1], None)

    def flood() -> bytes:
        head = b"POST / HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=60) as sock:
            sock.sendall(head % proxy.host("sink").encode())
            for _ in range(FLOOD_CHUNKS // 10_000):
                sock.sendall(BLOCK)
            sock.sendall(b"0\r\n\r\n")
            return sock.recv(4096)

    lateness: list[float] = []

    async def tick() -> None:
        while True:
            due = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lateness.append(time.perf_counter() - due)

    answered = 0

    async def other_client() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        request = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % proxy.host("hello").encode()
        try:
            while True:
                writer.write(request)
                status, body = await read_response(reader, timeout=5)
                assert (status, body) == (200, b"hello")
                answered += 1
        finally:
            writer.close()

    ticker = asyncio.create_task(tick())
    client = asyncio.create_task(other_client())
    try:
        answer = await asyncio.wait_for(asyncio.to_thread(flood), 90)
        if client.done():  # it failed while the flood went on
            raise AssertionError("the other client failed") from client.exception()
    finally:
        for task in (ticker, client):
            task.cancel()
        sink_server.close()
        hello_server.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert sink.body == FLOOD_CHUNKS, "every byte of the flood reached the backend"
    assert sink.chunks < FLOOD_CHUNKS / 4, f"{sink.chunks} writes toward the backend"
    assert answered > 0, "the other client was answered while the flood went on"
    worst = max(lateness)
    print(f"\n{answered} answers meanwhile; loop late by at most {worst * 1000:.1f} ms, "
          f"{sink.chunks} chunks toward the backend")  # fmt: skip
    assert worst < 0.25, f"the loop stalled for {worst * 1000:.0f} ms at once"
