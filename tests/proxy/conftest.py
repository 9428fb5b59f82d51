"""Fixtures for the proxy: a real proxy in this process, real test-backend containers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiodocker
import httpx
import pytest
import uvloop
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from drone.config import ProxySettings
from drone.proxy.fleet import WorkerOptions
from drone.proxy.server import ProxyServer
from drone.routes import ActivityTracker, RouteTable
from tests.support.docker import TEST_LABEL, container_ip

CLUSTER = "plane.test"
BACKEND_PORT = 8080


class RecordingActivity:
    """The real tracker, plus a way for tests to await its changes (held, not
    inherited: the tracker may be a compiled class, see tests/test_compiled_proxy.py)."""

    def __init__(self) -> None:
        self.tracker = ActivityTracker()
        self.begins = 0
        self.ends = 0
        self._changed = asyncio.Event()

    def begin(self, backend_id: str) -> None:
        self.tracker.begin(backend_id)
        self.begins += 1
        self._changed.set()

    def end(self, backend_id: str) -> None:
        self.tracker.end(backend_id)
        self.ends += 1
        self._changed.set()

    def track(self, backend_id: str) -> None:
        self.tracker.track(backend_id)

    def forget(self, backend_id: str) -> None:
        self.tracker.forget(backend_id)

    def active(self, backend_id: str) -> int:
        return self.tracker.active(backend_id)

    def idle_since(self, backend_id: str) -> float | None:
        return self.tracker.idle_since(backend_id)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("activity never reached the expected state")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise AssertionError("activity never reached the expected state") from None


@dataclass
class Proxy:
    server: ProxyServer
    routes: RouteTable
    activity: RecordingActivity
    registry: CollectorRegistry

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, backend: str) -> str:
        return f"{backend}.{CLUSTER}:{self.port}"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, trust_env=False, **kwargs)


@dataclass
class Backend:
    id: str
    ip: str
    port: int = BACKEND_PORT


MakeProxy = Callable[..., Awaitable[Proxy]]
StartBackend = Callable[..., Awaitable[Backend]]

FAST = {
    "listen": "127.0.0.1:0",
    "hold_until_ready_secs": 5.0,
    "head_timeout_secs": 5.0,
    "upstream_connect_timeout_secs": 3.0,
    "upstream_response_timeout_secs": 10.0,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run the proxy's tests on the loop the drone runs in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def make_proxy() -> AsyncIterator[MakeProxy]:
    started: list[ProxyServer] = []

    async def make(worker_options: WorkerOptions | None = None, **overrides: Any) -> Proxy:
        settings = ProxySettings(**{**FAST, **overrides})
        routes = RouteTable()
        activity = RecordingActivity()
        registry = CollectorRegistry()
        server = ProxyServer(
            settings, CLUSTER, routes, activity, registry, worker_options=worker_options
        )
        await server.start()
        started.append(server)
        return Proxy(server, routes, activity, registry)

    yield make
    for server in started:
        await server.stop(grace=1.0)


@pytest.fixture
async def proxy(make_proxy: MakeProxy) -> Proxy:
    return await make_proxy()


async def wait_listening(ip: str, port: int, timeout: float = 30.0) -> None:
    """Poll until the container accepts connections (external state, so polling)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 2.0)
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise AssertionError(f"test backend at {ip}:{port} never listened") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


@pytest.fixture
async def start_backend(
    docker: aiodocker.Docker, test_id: str, testbackend_image: str
) -> StartBackend:
    async def start(env: dict[str, str] | None = None, wait: bool = True) -> Backend:
        name = f"plane-proxytest-{uuid.uuid4().hex[:12]}"
        config: dict[str, Any] = {
            "Image": testbackend_image,
            "Labels": {TEST_LABEL: test_id},
            "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        }
        container = await docker.containers.run(config=config, name=name)
        ip = await container_ip(docker, container.id)
        if wait:
            await wait_listening(ip, BACKEND_PORT)
        return Backend(id=uuid.uuid4().hex[:10], ip=ip)

    return start


@pytest.fixture
async def backend(start_backend: StartBackend, proxy: Proxy) -> Backend:
    """One running test backend, routed as Ready (no token) on `proxy`."""
    found = await start_backend()
    proxy.routes.set_ready(found.id, found.ip, found.port, None)
    proxy.activity.track(found.id)
    return found


async def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh socket and read until the proxy closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader, timeout: float = 10.0) -> tuple[int, bytes]:
    """One Content-Length-framed response from a raw socket: (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return status, body


def ws_connect(proxy: Proxy, backend_id: str, path: str = "/ws") -> connect:
    """A WebSocket to a backend through the proxy (use with `async with` or `await`)."""
    return connect(
        f"ws://{backend_id}.{CLUSTER}:{proxy.port}{path}",
        host="127.0.0.1",
        port=proxy.port,
        proxy=None,
        open_timeout=10,
        close_timeout=5,
    )


async def assert_not_accepting(port: int) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.close()
    raise AssertionError("the proxy still accepts connections after stop()")
