"""Errors are answered, never a silently dropped socket, and the proxy keeps serving."""

from __future__ import annotations

import asyncio
import socket

from prometheus_client import generate_latest

from tests.proxy.conftest import (
    Backend,
    MakeProxy,
    Proxy,
    StartBackend,
    raw_request,
    read_response,
)


async def assert_still_serving(proxy: Proxy, backend: Backend) -> None:
    async with proxy.client() as client:
        response = await client.get("/", headers={"Host": proxy.host(backend.id)})
    assert response.status_code == 200


async def test_502_when_the_backend_refuses(proxy: Proxy, backend: Backend) -> None:
    proxy.routes.set_ready("refusing", backend.ip, 9, None)  # nothing listens on port 9
    async with proxy.client() as client:
        response = await client.get("/", headers={"Host": proxy.host("refusing")})
    assert response.status_code == 502
    assert "Bad Gateway" in response.text
    assert proxy.activity.active("refusing") == 0
    await assert_still_serving(proxy, backend)


async def test_502_when_the_backend_resets(
    proxy: Proxy, backend: Backend, start_backend: StartBackend
) -> None:
    dying = await start_backend()
    proxy.routes.set_ready(dying.id, dying.ip, dying.port, None)
    async with proxy.client() as client:
        response = await client.get("/crash/3", headers={"Host": proxy.host(dying.id)})
    assert response.status_code == 502
    assert proxy.activity.active(dying.id) == 0
    await assert_still_serving(proxy, backend)


async def test_504_when_the_backend_is_too_slow(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy = await make_proxy(upstream_response_timeout_secs=0.5)
    slow = await start_backend()
    proxy.routes.set_ready(slow.id, slow.ip, slow.port, None)
    async with proxy.client() as client:
        response = await client.get("/sleep/5000", headers={"Host": proxy.host(slow.id)})
        assert response.status_code == 504
        assert "did not answer in time" in response.text
        # the same backend still answers quick requests
        quick = await client.get("/sleep/1", headers={"Host": proxy.host(slow.id)})
        assert quick.status_code == 200
    assert proxy.activity.active(slow.id) == 0


async def test_malformed_requests_get_400_and_others_are_still_served(
    proxy: Proxy, backend: Backend
) -> None:
    garbage = await raw_request(proxy.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert garbage.endswith(b"\n")  # a full answer, then the close
    bad_header = await raw_request(
        proxy.port, b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n"
    )
    assert bad_header.startswith(b"HTTP/1.1 400 ")
    no_host = await raw_request(proxy.port, b"GET / HTTP/1.1\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400 ")
    host = proxy.host(backend.id).encode()
    both_lengths = await raw_request(
        proxy.port,
        b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % host,
    )
    assert both_lengths.startswith(b"HTTP/1.1 400 ")
    bad_chunk = await raw_request(
        proxy.port,
        b"POST / HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" % host,
    )
    assert bad_chunk.startswith(b"HTTP/1.1 400 ")
    gzip_te = await raw_request(
        proxy.port, b"POST / HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: gzip\r\n\r\n" % host
    )
    assert gzip_te.startswith(b"HTTP/1.1 501 ")
    two_hosts = await raw_request(
        proxy.port, b"GET / HTTP/1.1\r\nHost: %s\r\nHost: other.example\r\n\r\n" % host
    )
    assert two_hosts.startswith(b"HTTP/1.1 400 ")
    connect = await raw_request(
        proxy.port, b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (host, host)
    )
    assert connect.startswith(b"HTTP/1.1 405 ")
    await assert_still_serving(proxy, backend)
    assert proxy.activity.begins == proxy.activity.ends


async def test_oversized_heads_get_431(make_proxy: MakeProxy, start_backend: StartBackend) -> None:
    proxy = await make_proxy(max_head_bytes=8 * 1024)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    host = proxy.host(backend.id).encode()
    huge = b"x" * (20 * 1024)
    # arriving in pieces (h11's buffer limit) ...
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\nX-Big: " % host)
    for start in range(0, len(huge), 4096):
        writer.write(huge[start : start + 4096])
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    # ... and in one piece (the proxy's own count)
    whole = await raw_request(
        proxy.port, b"GET / HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\n\r\n" % (host, huge)
    )
    assert whole.startswith(b"HTTP/1.1 431 ")
    await assert_still_serving(proxy, backend)


async def test_413_when_the_body_limit_is_exceeded(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy = await make_proxy(max_body_bytes=1000)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    host = {"Host": proxy.host(backend.id)}

    async def chunks(total: int) -> object:
        for _ in range(total // 500):
            yield b"y" * 500

    async with proxy.client() as client:
        small = await client.post("/", headers=host, content=b"x" * 1000)
        assert small.status_code == 200
        assert small.text.strip() == "1000"
        declared = await client.post("/", headers=host, content=b"x" * 2000)
        assert declared.status_code == 413
        streamed = await client.post("/", headers=host, content=chunks(5000))  # type: ignore[arg-type]
        assert streamed.status_code == 413
    assert proxy.activity.active(backend.id) == 0
    await assert_still_serving(proxy, backend)


async def test_a_slow_client_is_cut_off_after_the_head_timeout(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy = await make_proxy(head_timeout_secs=0.5)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\n" % proxy.host(backend.id).encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), 10)  # EOF comes after the answer
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    await assert_still_serving(proxy, backend)


async def test_an_idle_keep_alive_socket_is_closed_after_its_timeout(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy = await make_proxy(keepalive_timeout_secs=0.5)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % proxy.host(backend.id).encode())
        status, _ = await read_response(reader)
        assert status == 200
        assert await asyncio.wait_for(reader.read(-1), 10) == b""  # closed quietly
    finally:
        writer.close()


async def test_504_when_connecting_to_the_backend_times_out(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(upstream_connect_timeout_secs=0.3)
    # A listener that never accepts, its queue already full: Linux drops further SYNs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        proxy.routes.set_ready("stuck", "127.0.0.1", port, None)
        async with proxy.client() as client:
            response = await client.get("/", headers={"Host": proxy.host("stuck")})
        assert response.status_code == 504
        text = generate_latest(proxy.registry).decode()
        assert "plane_proxy_upstream_connect_errors_total 1.0" in text
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert proxy.activity.active("stuck") == 0
