"""The proxy's request path in memory: a browser, the proxy's protocols, and
scripted backends, joined by transports that are byte buffers.

`MemoryTransport` does what the proxy uses of an asyncio transport: it keeps
what is written, records pauses, and on close tells its protocol, on the next
turn of the loop as real transports do. `Bed` makes a `ProxyContext` whose pool
opens a `Backend` instead of a socket; `Bed.browser()` is one browser socket.
Everything runs on the test's loop in milliseconds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry

from drone.config import ProxySettings
from drone.proxy.client import ClientConnection
from drone.proxy.context import ProxyContext
from drone.proxy.metrics import ProxyMetrics
from drone.proxy.upstream import UpstreamPool
from drone.routes import RouteTable
from tests.proxy.conftest import CLUSTER, RecordingActivity


class MemoryTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, peer: tuple[str, int]) -> None:
        super().__init__()
        self.loop = loop
        self.peer = peer
        self.protocol: asyncio.BaseProtocol | None = None
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.eof_written = False

    # what the proxy calls
    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return 0

    # what the other side does
    def take(self) -> bytes:
        """What was written since the last take."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def _lose(self) -> None:
        if not self.closed:
            self.closed = True
            protocol = self.protocol
            if protocol is not None:
                self.loop.call_soon(protocol.connection_lost, None)


class Backend:
    """One socket of a scripted backend: what the proxy sent, and ways to answer."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    @property
    def protocol(self) -> asyncio.Protocol:
        """Whoever reads the socket now: the proxy's backend side, or a tunnel's end."""
        return cast(asyncio.Protocol, self.transport.get_protocol())

    def received(self) -> bytes:
        return self.transport.take()

    def answer(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def end(self) -> None:
        """The backend closes its socket (FIN, then gone)."""
        self.protocol.eof_received()
        self.transport.close()


class Browser:
    """One browser socket on the proxy."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.transport = MemoryTransport(ctx.loop, ("192.0.2.7", 40000))
        client = ClientConnection(ctx)
        self.transport.set_protocol(client)
        client.connection_made(self.transport)

    @property
    def protocol(self) -> asyncio.Protocol:
        """Whoever reads the socket now: the proxy's browser side, or a tunnel's end."""
        return cast(asyncio.Protocol, self.transport.get_protocol())

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def received(self) -> bytes:
        return self.transport.take()

    def full(self, on: bool) -> None:
        """The browser stops (or starts again) reading: the proxy's writes back up."""
        if on:
            self.protocol.pause_writing()
        else:
            self.protocol.resume_writing()


class Bed:
    def __init__(self, loop: asyncio.AbstractEventLoop, **settings: Any) -> None:
        self.settings = ProxySettings(**settings)
        self.routes = RouteTable()
        self.activity = RecordingActivity()
        self.backends: list[Backend] = []
        self.refuse = False  # the next connections are refused
        pool = UpstreamPool(
            loop,
            self.settings.upstream_pool_size,
            self.settings.upstream_connect_timeout_secs,
            self.settings.upstream_idle_secs,
            connector=self._connect,
        )
        self.ctx = ProxyContext(
            loop=loop,
            settings=self.settings,
            routes=self.routes,
            activity=self.activity,
            metrics=ProxyMetrics(CollectorRegistry()),
            pool=pool,
            domain=CLUSTER.encode(),
            secure=False,
        )

    def route(self, backend: str) -> bytes:
        """A Ready route to a scripted backend; the Host header that reaches it."""
        self.routes.set_ready(backend, "10.0.0.2", 8080, None)
        self.activity.track(backend)
        return f"{backend}.{CLUSTER}".encode()

    def browser(self) -> Browser:
        return Browser(self.ctx)

    async def ask(self, request: bytes) -> tuple[Browser, Backend]:
        """A new browser socket sends `request`; the backend socket it reaches."""
        browser = self.browser()
        browser.send(request)
        return browser, await self.backend()

    async def backend(self, index: int = -1, timeout: float = 2.0) -> Backend:
        """The backend socket numbered `index` once the proxy has sent a request on it."""

        def sent() -> bool:
            backends = self.backends
            return len(backends) > max(index, 0) and bool(backends[index].transport.written)

        await until(sent, timeout)
        return self.backends[index]

    async def _connect(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        if self.refuse:
            raise ConnectionRefusedError(f"{host}:{port} refused")
        protocol = factory()
        transport = MemoryTransport(self.ctx.loop, (host, port))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.backends.append(Backend(transport))
        return transport, protocol


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Give the loop turns until `predicate()` holds; fail after `timeout`.

    Turns of the loop are what is awaited: in memory, the proxy's callbacks and
    tasks are all that run, and each turn runs the ones that are due."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (no event to wait for: see above)
            await asyncio.sleep(0)


def responses(data: bytes) -> list[bytes]:
    """Status lines of the responses in `data`."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", data)
