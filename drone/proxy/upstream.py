"""Connections to backends, and the small keep-alive pool they return to.

The request head is serialized by the proxy itself (its headers were already
checked when the browser's head was parsed); h11 in the client role parses the
response. h11 is told only what it needs for that — the request method and
whether an upgrade was asked for — through a stand-in request whose bytes are
never sent. Whether the real request body has been fully written is tracked
here, beside it.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, cast

import h11

from drone.proxy.timer import Deadline

if TYPE_CHECKING:
    from drone.proxy.exchange import Exchange

Key = tuple[str, int]

# A backend may send long cookies; its heads get more room than a browser's.
MAX_RESPONSE_HEAD = 256 * 1024
_STANDIN = [(b"host", b"backend")]
_STANDIN_UPGRADE = [(b"host", b"backend"), (b"connection", b"upgrade"), (b"upgrade", b"x")]
_END = h11.EndOfMessage()


class Failure(enum.Enum):
    RESET = "reset"  # closed or reset before the response was complete
    GARBLED = "garbled"  # not a valid HTTP response
    TIMEOUT = "timeout"  # no response head in time


class UpstreamConnection(asyncio.Protocol):
    """One socket to a backend, serving one exchange at a time."""

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._pool = pool
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self._exchange: Exchange | None = None
        self._chunked = False
        self._got_data = False
        self._paused = False  # reading stopped because the browser reads slowly
        self._deadline = Deadline(pool.loop, self._on_timeout)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("busy" if self._exchange else "idle")
        return f"<UpstreamConnection {self.key[0]}:{self.key[1]} {state}>"

    # -- driven by the exchange

    def begin(self, exchange: Exchange, head: bytes, method: bytes, upgrade: bool) -> None:
        assert self.transport is not None
        self._exchange = exchange
        self._chunked = exchange.chunked
        self._got_data = False
        conn = self._h11
        conn.send(
            h11.Request(
                method=method, target=b"/", headers=_STANDIN_UPGRADE if upgrade else _STANDIN
            )
        )
        conn.send(_END)
        self.transport.write(head)

    def write_body(self, data: bytes) -> None:
        assert self.transport is not None
        if not data:
            return
        if self._chunked:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def end_body(self, response_timeout: float) -> None:
        assert self.transport is not None
        if self._chunked:
            self.transport.write(b"0\r\n\r\n")
        if self._h11.their_state is h11.SEND_RESPONSE:
            self._deadline.set_in(response_timeout)

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            if self.transport is not None and not self.closed:
                self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if not self.closed:
                assert self.transport is not None
                self.transport.resume_reading()
            self._pump()
            if self.closed and self._exchange is not None:
                self._fail(Failure.RESET)

    def finish_cycle(self) -> bool:
        """After a complete response: make ready for the next request, if the backend allows."""
        conn = self._h11
        if self.closed or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True

    def detach(self) -> tuple[asyncio.Transport, bytes, bool]:
        """Hand the socket over after a 101: the transport, bytes already read past
        the response head, and whether reading is paused."""
        assert self.transport is not None
        self._deadline.cancel()
        self._exchange = None
        self.closed = True  # no longer ours, never pooled
        return self.transport, self._h11.trailing_data[0], self._paused

    def close(self) -> None:
        self._exchange = None
        self._deadline.cancel()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._exchange is None:
            # A backend talking while idle breaks the protocol; drop the socket.
            self._pool.discard(self)
            self.close()
            return
        self._got_data = True
        self._h11.receive_data(data)
        if not self._paused:
            self._pump()

    def eof_received(self) -> bool | None:
        self._h11.receive_data(b"")
        if self._exchange is not None and not self._paused:
            self._pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        self._deadline.cancel()
        self._pool.discard(self)
        if was_closed or self._exchange is None:
            return
        self._h11.receive_data(b"")
        if self._paused:
            return  # what was read is delivered on resume()
        self._pump()
        if self._exchange is not None:
            self._fail(Failure.RESET)

    def pause_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.upstream_full(True)

    def resume_writing(self) -> None:
        if self._exchange is not None:
            self._exchange.upstream_full(False)

    # -- internals

    def _pump(self) -> None:
        conn = self._h11
        exchange = self._exchange
        while exchange is not None and not self._paused:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                self._fail(Failure.GARBLED if self._got_data else Failure.RESET)
                return
            kind = type(event)
            if kind is h11.Data:
                exchange.on_response_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.Response:
                self._deadline.clear()
                exchange.on_response(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._exchange = None
                exchange.on_response_end(self)
                return
            elif kind is h11.InformationalResponse:
                if event.status_code == 101:  # type: ignore[union-attr]
                    self._deadline.clear()
                    exchange.on_switch(self, event)  # type: ignore[arg-type]
                    return
                # other 1xx (100 Continue, 103 Early Hints) are not relayed
            elif event is h11.NEED_DATA:
                break
            else:  # ConnectionClosed or PAUSED before the response ended
                self._fail(Failure.RESET)
                return
            exchange = self._exchange
        if exchange is not None:
            exchange.flush()

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
    ) -> None:
        self.loop = loop
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
            self.loop.create_connection(lambda: UpstreamConnection(self, key), key[0], key[1]),
            self._connect_timeout,
        )
        return conn

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
