"""Upgrades: WebSocket echo through the proxy, activity while open, and the idle sweep."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import generate_latest
from websockets.asyncio.client import ClientConnection, connect

from drone.routes import sweep_due
from tests.proxy.conftest import CLUSTER, Backend, Proxy, ws_connect


async def echo(ws: ClientConnection, message: str | bytes) -> str | bytes:
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), 10)


async def test_websocket_echo_in_order_text_and_binary(proxy: Proxy, backend: Backend) -> None:
    async with ws_connect(proxy, backend.id) as ws:
        for n in range(1, 7):
            await ws.send(str(n))
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(6)] == [
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
        ]
        for n in range(1, 7):
            await ws.send(bytes([n]) * n)
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(6)] == [
            bytes([n]) * n for n in range(1, 7)
        ]
        big = bytes(range(256)) * 2048  # 512 KiB, more than one socket buffer
        assert await echo(ws, big) == big
        assert proxy.activity.active(backend.id) == 1
        text = generate_latest(proxy.registry).decode()
        assert "plane_proxy_upgraded_connections 1.0" in text
        assert 'plane_proxy_requests_total{status_class="1xx"} 1.0' in text
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
    assert "plane_proxy_upgraded_connections 0.0" in generate_latest(proxy.registry).decode()
    assert proxy.activity.begins == proxy.activity.ends


async def test_websocket_with_a_token(proxy: Proxy, backend: Backend) -> None:
    proxy.routes.set_ready("guarded", backend.ip, backend.port, "tok")
    async with connect(
        f"ws://guarded.{CLUSTER}:{proxy.port}/",
        host="127.0.0.1",
        port=proxy.port,
        proxy=None,
        additional_headers={"Cookie": "_plane_auth=tok"},
    ) as ws:
        assert await echo(ws, "hi") == "hi"


async def test_an_open_websocket_keeps_the_backend_from_being_swept(
    proxy: Proxy, backend: Backend
) -> None:
    """A sweeper like the agent's: sweeps when `sweep_due` says so."""
    max_idle = 1.0
    swept_at: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def sweeper() -> None:
        while True:
            now = time.monotonic()
            if sweep_due(now, proxy.activity.idle_since(backend.id), max_idle):
                proxy.routes.remove(backend.id)
                proxy.activity.forget(backend.id)
                swept_at.set_result(now)
                return
            await asyncio.sleep(0.05)

    proxy.activity.track(backend.id)
    async with ws_connect(proxy, backend.id) as ws:
        task = asyncio.create_task(sweeper())
        try:
            # an idle keep-alive socket beside it keeps nothing alive
            async with proxy.client() as client:
                response = await client.get("/", headers={"Host": proxy.host(backend.id)})
                assert response.status_code == 200
                done, _ = await asyncio.wait({swept_at}, timeout=max_idle * 2.5)
                assert not done, "swept while a WebSocket was open"
                assert await echo(ws, "still here") == "still here"
                await ws.close()
                closed_at = time.monotonic()
                await asyncio.wait_for(asyncio.shield(swept_at), max_idle + 1.0)
        finally:
            task.cancel()
    assert swept_at.result() - closed_at <= max_idle + 1.0
    assert proxy.routes.get(backend.id) is None
