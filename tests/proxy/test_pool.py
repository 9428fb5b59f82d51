"""Backends that misbehave on cue: small real servers in the test, since the
test image is well behaved.

One answers the first request on each connection and closes the connection on
the second without answering, as a backend whose keep-alive timer ran out at
that very moment would; others answer with broken HTTP.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.proxy.conftest import Proxy


async def one_shot_backend(connections: list[int]) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if served:
                    break  # the second request on this connection: drop it unanswered
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_a_dropped_pooled_connection_is_retried_for_requests_without_body(
    proxy: Proxy,
) -> None:
    connections: list[int] = []
    server = await one_shot_backend(connections)
    port = server.sockets[0].getsockname()[1]
    proxy.routes.set_ready("flaky", "127.0.0.1", port, None)
    host = {"Host": proxy.host("flaky")}
    try:
        async with proxy.client() as client:
            assert (await client.get("/", headers=host)).status_code == 200
            assert (await client.get("/", headers=host)).status_code == 200  # retried
            assert len(connections) == 2
            # a request with a body is not sent twice: the browser learns of the failure
            assert (await client.post("/", headers=host, content=b"abc")).status_code == 502
    finally:
        server.close()
    assert proxy.activity.active("flaky") == 0


async def canned_backend(answer: bytes) -> asyncio.Server:
    """Reads one request head and answers with `answer`, then closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_garbled_backend_answers_become_502(proxy: Proxy) -> None:
    for answer in (
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"",
    ):
        server = await canned_backend(answer)
        proxy.routes.set_ready("garbled", "127.0.0.1", server.sockets[0].getsockname()[1], None)
        try:
            async with proxy.client() as client:
                response = await client.get("/", headers={"Host": proxy.host("garbled")})
        finally:
            server.close()
        assert response.status_code == 502, answer
    assert proxy.activity.active("garbled") == 0


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot-hex\r\n",
    ],
)
async def test_a_body_broken_after_the_head_cuts_the_browser_off(
    proxy: Proxy, answer: bytes
) -> None:
    """Once the head is relayed an error answer is impossible: the browser sees the
    connection end before the body does, never a body that looks complete."""
    server = await canned_backend(answer)
    proxy.routes.set_ready("short", "127.0.0.1", server.sockets[0].getsockname()[1], None)
    try:
        async with proxy.client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/", headers={"Host": proxy.host("short")})
    finally:
        server.close()
    assert proxy.activity.active("short") == 0
