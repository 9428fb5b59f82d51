"""Routing by Host, holding until Ready, keep-alive, and forwarded headers,
through the real proxy to real test-backend containers."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from tests.proxy.conftest import (
    CLUSTER,
    Backend,
    MakeProxy,
    Proxy,
    assert_not_accepting,
    raw_request,
    read_response,
)


async def test_routes_by_host_and_answers_404_otherwise(proxy: Proxy, backend: Backend) -> None:
    async with proxy.client() as client:
        ok = await client.get("/anything", headers={"Host": proxy.host(backend.id)})
        assert ok.status_code == 200
        assert ok.content  # the test backend's short body
        shouting = await client.get("/", headers={"Host": f"{backend.id.upper()}.PLANE.TEST"})
        assert shouting.status_code == 200
        unknown = await client.get("/", headers={"Host": f"nobody.{CLUSTER}"})
        assert unknown.status_code == 404
        assert "no backend" in unknown.text
        other_domain = await client.get("/", headers={"Host": f"{backend.id}.example.com"})
        assert other_domain.status_code == 404
        bare = await client.get("/", headers={"Host": CLUSTER})
        assert bare.status_code == 404
        # the 404s kept the connection: one more request on it still routes
        again = await client.get("/", headers={"Host": proxy.host(backend.id)})
        assert again.status_code == 200


async def test_host_is_forwarded_and_forwarding_headers_are_set(
    proxy: Proxy, backend: Backend
) -> None:
    host = proxy.host(backend.id)
    async with proxy.client() as client:
        response = await client.get(
            "/headers",
            headers={
                "Host": host,
                "X-Forwarded-For": "198.51.100.7",
                "X-Forwarded-Proto": "gopher",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "must not pass",
                "Keep-Alive": "timeout=5",
                "X-Custom": "kept",
            },
        )
    assert response.status_code == 200
    seen = response.text.lower().replace("\r\n", "\n")  # the head as the backend got it
    assert f"host: {host}".lower() in seen
    assert "x-forwarded-for: 198.51.100.7, 127.0.0.1" in seen
    assert "x-forwarded-proto: http\n" in seen
    assert f"x-forwarded-host: {host}".lower() in seen
    assert "x-custom: kept" in seen
    assert "x-hop" not in seen
    assert "keep-alive" not in seen


async def test_holds_a_request_until_the_backend_is_ready(proxy: Proxy, backend: Backend) -> None:
    waiting = "pending-one"
    proxy.routes.set_pending(waiting)
    async with proxy.client() as client:
        request = asyncio.create_task(client.get("/", headers={"Host": proxy.host(waiting)}))
        await proxy.activity.wait_for(lambda: proxy.activity.active(waiting) == 1)
        assert not request.done()
        proxy.routes.set_ready(waiting, backend.ip, backend.port, None)
        response = await asyncio.wait_for(request, 10)
    assert response.status_code == 200
    await proxy.activity.wait_for(lambda: proxy.activity.active(waiting) == 0)


async def test_a_backend_never_ready_gets_503_with_retry_after(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(hold_until_ready_secs=0.3)
    proxy.routes.set_pending("slow")
    async with proxy.client() as client:
        response = await client.get("/", headers={"Host": proxy.host("slow")})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        # removed while held: 404
        proxy.routes.set_pending("gone")
        request = asyncio.create_task(client.get("/", headers={"Host": proxy.host("gone")}))
        await proxy.activity.wait_for(lambda: proxy.activity.active("gone") == 1)
        proxy.routes.remove("gone")
        assert (await request).status_code == 404
    assert proxy.activity.active("slow") == 0


async def test_keep_alive_on_both_sides(proxy: Proxy, backend: Backend) -> None:
    host = proxy.host(backend.id).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        # three pipelined requests on one browser socket, answered in order
        writer.write(
            b"GET /one HTTP/1.1\r\nHost: %s\r\n\r\n"
            b"POST /two HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /headers HTTP/1.1\r\nHost: %s\r\nX-Third: 3\r\n\r\n" % (host, host, host)
        )
        await writer.drain()
        first = await read_response(reader)
        second = await read_response(reader)
        third = await read_response(reader)
        assert first[0] == second[0] == third[0] == 200
        assert second[1].strip() == b"5"
        assert b"x-third: 3" in third[1].lower()
        # the backend connection was reused: never more than one idle in the pool
        key = (backend.ip, backend.port)
        assert proxy.server.context.pool.idle_count(key) == 1
        for _ in range(5):
            writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
            status, _ = await read_response(reader)
            assert status == 200
            assert proxy.server.context.pool.idle_count(key) == 1
    finally:
        writer.close()


async def test_streaming_response_counts_as_activity_until_it_ends(
    proxy: Proxy, backend: Backend
) -> None:
    host = {"Host": proxy.host(backend.id)}
    async with proxy.client() as client, client.stream("GET", "/stream/5", headers=host) as r:
        chunks = r.aiter_raw()
        await anext(chunks)
        assert proxy.activity.active(backend.id) == 1
        assert proxy.activity.idle_since(backend.id) is None
        async for _ in chunks:
            pass
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
    assert proxy.activity.idle_since(backend.id) is not None


async def test_client_leaving_mid_stream_ends_the_activity(proxy: Proxy, backend: Backend) -> None:
    host = proxy.host(backend.id).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /stream/50 HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert proxy.activity.active(backend.id) == 1
    writer.transport.abort()
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
    assert proxy.activity.begins == proxy.activity.ends


async def test_metrics_count_traffic(proxy: Proxy, backend: Backend) -> None:
    async with proxy.client() as client:
        await client.get("/", headers={"Host": proxy.host(backend.id)})
        await client.get("/", headers={"Host": f"nobody.{CLUSTER}"})
        text = generate_latest(proxy.registry).decode()
    assert 'plane_proxy_requests_total{status_class="2xx"} 1.0' in text
    assert 'plane_proxy_requests_total{status_class="4xx"} 1.0' in text
    assert "plane_proxy_upstream_response_seconds_count 1.0" in text
    assert "plane_proxy_client_connections 1.0" in text  # httpx's keep-alive socket
    assert "plane_proxy_upgraded_connections 0.0" in text
    sent = [line for line in text.splitlines() if line.startswith("plane_proxy_sent_bytes_total")]
    assert float(sent[0].split()[1]) > 0


async def test_expect_continue_head_and_http10(proxy: Proxy, backend: Backend) -> None:
    host = proxy.host(backend.id).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
            % host
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(b"data")
        status, body = await read_response(reader)
        assert (status, body.strip()) == (200, b"4")
        writer.write(b"HEAD / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        # no body followed the HEAD answer: the next answer starts right away
        writer.write(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        status, _ = await read_response(reader)
        assert status == 200
    finally:
        writer.close()
    old = await raw_request(proxy.port, b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host)
    assert old.startswith(b"HTTP/1.1 200 ")
    assert old.split(b"\r\n\r\n", 1)[1]  # the body, delimited by the close


async def test_stop_lets_requests_in_flight_finish(proxy: Proxy, backend: Backend) -> None:
    host = {"Host": proxy.host(backend.id)}
    async with proxy.client() as client:
        slow = asyncio.create_task(client.get("/sleep/500", headers=host))
        await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 1)
        await proxy.server.stop(grace=10)
        response = await slow
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
    await assert_not_accepting(proxy.port)
    assert proxy.activity.active(backend.id) == 0


def dechunk(body: bytes) -> bytes:
    """A whole chunked body decoded; fails on anything but well-formed chunks."""
    out = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            assert body == b"\r\n"
            return out
        assert body[n : n + 2] == b"\r\n"
        out, body = out + body[:n], body[n + 2 :]


async def test_a_body_of_unknown_length_is_chunked_for_http11_and_closed_for_http10(
    proxy: Proxy, backend: Backend
) -> None:
    host = proxy.host(backend.id).encode()
    lines = b"chunk 1\nchunk 2\nchunk 3\n"
    new = await raw_request(
        proxy.port, b"GET /stream/3 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host
    )
    head, _, body = new.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"connection: close" in head.lower()
    assert dechunk(body) == lines

    old = await raw_request(proxy.port, b"GET /stream/3 HTTP/1.0\r\nHost: %s\r\n\r\n" % host)
    head, _, body = old.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == lines  # delimited by the close


async def test_head_and_declined_upgrades_keep_the_connection(
    proxy: Proxy, backend: Backend
) -> None:
    host = proxy.host(backend.id).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"HEAD / HTTP/1.1\r\nHost: nobody.%s\r\n\r\n" % CLUSTER.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
        assert b"content-length: " in head.lower()  # what a GET would get, without the body
        # The backend answers an Upgrade it does not know like any other request.
        writer.write(
            b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: upgrade\r\nUpgrade: gopher\r\n\r\n" % host
        )
        status, body = await read_response(reader)
        assert status == 200 and body
        writer.write(b"GET /headers HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        status, body = await read_response(reader)
        assert status == 200
        assert b"upgrade" not in body.lower()
    finally:
        writer.close()
    assert proxy.activity.active(backend.id) == 0
