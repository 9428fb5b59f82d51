"""Connections to backends, and the small keep-alive pool they return to.

The request head is serialized by the proxy itself (its headers were checked
when the browser's head was parsed by h11); responses are read by
`ResponseReader`. Whether the real request body has been fully written is the
exchange's to know.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from drone.proxy.chunked import LAST_CHUNK, chunk
from drone.proxy.flow import ReadGate
from drone.proxy.response_reader import ResponseError, ResponseReader
from drone.proxy.timer import Deadline

Key = tuple[str, int]
# How a socket to a backend is opened: the loop's create_connection, or in tests
# an in-memory pair.
Connector = Callable[
    [Callable[[], asyncio.Protocol], str, int],
    Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]],
]

# A backend may send long cookies; its heads get more room than a browser's.
MAX_RESPONSE_HEAD = 256 * 1024
BROWSER_FULL = 1  # the one reason to stop reading a backend: the browser's socket is full


class Failure(enum.Enum):
    RESET = "reset"  # closed or reset before the response was complete
    GARBLED = "garbled"  # not a valid HTTP response
    TIMEOUT = "timeout"  # no response head in time


class ResponseSink(Protocol):
    """What a backend socket needs from the request it serves, and no more."""

    @property
    def chunked(self) -> bool:
        """Whether the request body goes with chunked framing."""

    def upstream_full(self, full: bool) -> None:
        """The backend's socket buffer filled (or drained)."""

    def on_response(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], sized: bool
    ) -> None: ...

    def on_response_data(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """A read of the backend's socket has been handed over in full."""

    def on_response_end(self, upstream: UpstreamConnection) -> None: ...

    def on_switch(self, upstream: UpstreamConnection, headers: list[tuple[bytes, bytes]]) -> None:
        """The backend answered 101: the socket is no longer HTTP."""

    def on_upstream_failure(self, failure: Failure, retryable: bool) -> None:
        """The backend failed this request; `retryable`: nothing of it was answered."""


class UpstreamConnection(asyncio.Protocol):
    """One socket to a backend, serving one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._pool = pool
        self._reader = ResponseReader(self, MAX_RESPONSE_HEAD)
        self._exchange: ResponseSink | None = None
        self._chunked = False
        self._got_data = False
        self._head_seen = False
        self._eof = False
        self._reading = ReadGate()
        self._deadline = Deadline(pool.loop, self._on_timeout)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self._exchange else "idle")
        return f"<UpstreamConnection {self.key[0]}:{self.key[1]} {state}>"

    # -- driven by the exchange

    def begin(self, exchange: ResponseSink, head: bytes, method: bytes, upgrade: bool) -> None:
        assert self.transport is not None
        self._exchange = exchange
        self._chunked = exchange.chunked
        self._got_data = False
        self._head_seen = False
        self._reader.start(method == b"HEAD", upgrade)
        self.transport.write(head)

    def write_body(self, data: bytes) -> None:
        assert self.transport is not None
        if not data:
            return
        if self._chunked:
            self.transport.writelines(chunk(data))
        else:
            self.transport.write(data)

    def end_body(self, response_timeout: float) -> None:
        assert self.transport is not None
        if self._chunked:
            self.transport.write(LAST_CHUNK)
        if not self._head_seen:
            self._deadline.set_in(response_timeout)

    def pause(self) -> None:
        self._reader.paused = True
        self._reading.hold(BROWSER_FULL)

    def resume(self) -> None:
        reader = self._reader
        if not reader.paused:
            return
        reader.paused = False
        self._reading.release(BROWSER_FULL)
        try:
            reader.run()
            if self._eof and self._exchange is not None:
                reader.feed_eof()
        except ResponseError:
            self._fail(Failure.GARBLED)
            return
        if self._exchange is not None:
            if self.closed and not reader.paused:
                self._fail(Failure.RESET)
            else:
                self._exchange.flush()

    def finish_cycle(self) -> bool:
        """After a complete response: whether the socket can carry another request."""
        return not self.closed and not self._eof and self._reader.reusable

    def detach(self) -> tuple[asyncio.Transport, bytes, bool]:
        """Hand the socket over after a 101: the transport, bytes already read past
        the response head, and whether reading is paused."""
        assert self.transport is not None
        self._deadline.cancel()
        self._exchange = None
        self.closed = self._reading.closed = True  # no longer ours, never pooled
        return self.transport, self._reader.rest(), bool(self._reading.held)

    def close(self) -> None:
        self._exchange = None
        self._deadline.cancel()
        if not self.closed:
            self.closed = self._reading.closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- the response reader's sink

    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], sized: bool
    ) -> None:
        self._head_seen = True
        self._deadline.clear()
        if self._exchange is not None:
            self._exchange.on_response(status, reason, headers, sized)

    def on_switch(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._head_seen = True
        self._deadline.clear()
        exchange = self._exchange
        if exchange is not None:
            self._reader.paused = True  # the rest belongs to the tunnel
            exchange.on_switch(self, headers)

    def on_data(self, data: bytes) -> None:
        if self._exchange is not None:
            self._exchange.on_response_data(data)

    def on_end(self) -> None:
        exchange = self._exchange
        self._exchange = None
        if exchange is not None:
            exchange.on_response_end(self)

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._reading.attach(self.transport)

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            # A backend talking while idle breaks the protocol; drop the socket.
            self._pool.discard(self)
            self.close()
            return
        self._got_data = True
        try:
            self._reader.feed(data)
        except ResponseError:
            self._fail(Failure.GARBLED)
            return
        exchange = self._exchange
        if exchange is not None:
            exchange.flush()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._exchange is not None and not self._reader.paused:
            try:
                self._reader.feed_eof()
            except ResponseError:
                self._fail(Failure.RESET if not self._got_data else Failure.GARBLED)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = self._reading.closed = True
        self._eof = True
        self._deadline.cancel()
        self._pool.discard(self)
        if was_closed or self._exchange is None or self._reader.paused:
            return  # when paused, what was read is delivered on resume()
        self._fail(Failure.RESET)

    def pause_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.upstream_full(True)

    def resume_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.upstream_full(False)

    # -- internals

    def _fail(self, failure: Failure) -> None:
        exchange = self._exchange
        retryable = self.reused and not self._got_data
        self.close()
        if exchange is not None:
            exchange.on_upstream_failure(failure, retryable)

    def _on_timeout(self) -> None:
        if self._exchange is not None:
            self._fail(Failure.TIMEOUT)


class UpstreamPool:
    """Idle keep-alive connections per backend address, newest reused first."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        size: int,
        connect_timeout: float,
        idle_secs: float,
        connector: Connector | None = None,
    ) -> None:
        self.loop = loop
        self._connector: Connector = connector or loop.create_connection
        self._size = size
        self._connect_timeout = connect_timeout
        self._idle_secs = idle_secs
        self._idle: dict[Key, list[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, key: Key) -> UpstreamConnection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, key: Key) -> UpstreamConnection:
        """A new connection; raises TimeoutError or OSError."""
        _, conn = await asyncio.wait_for(
            self._connector(lambda: UpstreamConnection(self, key), key[0], key[1]),
            self._connect_timeout,
        )
        return cast(UpstreamConnection, conn)

    def put(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        conns = self._idle.setdefault(conn.key, [])
        if len(conns) >= self._size:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._idle_secs, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.key]

    def idle_count(self, key: Key) -> int:
        return sum(1 for conn in self._idle.get(key, ()) if not conn.closed)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - self._idle_secs
        oldest: float | None = None
        for key in list(self._idle):
            kept = []
            for conn in self._idle[key]:
                if conn.closed:
                    continue
                if conn.idle_since <= cutoff:
                    conn.close()
                else:
                    kept.append(conn)
                    oldest = conn.idle_since if oldest is None else min(oldest, conn.idle_since)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if oldest is not None:
            delay = max(oldest + self._idle_secs - self.loop.time(), 0.01)
            self._sweeper = self.loop.call_later(delay, self._sweep)
