"""The upstream keep-alive pool when a backend drops a connection it had kept open.

This needs a backend that misbehaves on cue, so it is a small real server in
the test: it answers the first request on each connection and closes the
connection on the second without answering, as a backend whose keep-alive
timer ran out at that very moment would.
"""

from __future__ import annotations

import asyncio

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
