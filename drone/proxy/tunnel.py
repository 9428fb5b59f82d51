"""Raw byte copying between a browser and a backend after a protocol switch.

No parsing: each side's transport gets a small protocol that writes what it
reads to the other side, and stops reading while the other side's write
buffer is full. The tunnel holds one begin/end pair on the activity tracker
for as long as it is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drone.proxy.flow import ReadGate
from drone.proxy.metrics import ProxyMetrics
from drone.routes import Activity

# After one side closes, the other gets this long to flush before it is cut.
CLOSE_GRACE_SECS = 10.0
PEER_FULL = 1  # the one reason to stop reading an end: the other end's socket is full


class _End(asyncio.Protocol):
    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, from_client: bool) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.from_client = from_client
        self.peer: _End
        self.reading = ReadGate(transport)
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        metrics = self.tunnel.metrics
        if self.from_client:
            metrics.received_bytes += len(data)
        else:
            metrics.sent_bytes += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        peer = self.peer
        if peer.eof or not peer.transport.can_write_eof() or not self.transport.can_write_eof():
            peer.transport.close()  # no half-close over TLS: both directions end
            return None
        peer.transport.write_eof()
        return True  # half-closed: the other direction keeps flowing

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.reading.closed = True
        self.tunnel.side_lost(self)

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()

    def pause_reading(self) -> None:
        self.reading.hold(PEER_FULL)

    def resume_reading(self) -> None:
        self.reading.release(PEER_FULL)


class Tunnel:
    def __init__(
        self,
        backend: str,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        activity: Activity,
        metrics: ProxyMetrics,
        on_closed: Callable[[Tunnel], None],
    ) -> None:
        self.backend = backend
        self.activity = activity
        self.metrics = metrics
        self._on_closed = on_closed
        self._client = _End(self, client, from_client=True)
        self._upstream = _End(self, upstream, from_client=False)
        self._client.peer = self._upstream
        self._upstream.peer = self._client
        self._open = False
        self._killer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Tunnel {self.backend} {'open' if self._open else 'closed'}>"

    def start(
        self,
        to_upstream: bytes,
        to_client: bytes,
        client_paused: bool,
        upstream_paused: bool,
    ) -> None:
        """Take both transports over; the arguments say what was read past the
        switch on each side and which transport's reading is paused now."""
        self.activity.begin(self.backend)
        self.metrics.upgraded_connections += 1
        self._open = True
        client, upstream = self._client, self._upstream
        # Paused by the previous owner, resumed below: the same as the other end full.
        client.reading = ReadGate(client.transport, PEER_FULL if client_paused else 0)
        upstream.reading = ReadGate(upstream.transport, PEER_FULL if upstream_paused else 0)
        client.transport.set_protocol(client)
        upstream.transport.set_protocol(upstream)
        if to_upstream:
            upstream.transport.write(to_upstream)
        if to_client:
            self.metrics.sent_bytes += len(to_client)
            client.transport.write(to_client)
        if client.transport.is_closing() or upstream.transport.is_closing():
            return
        client.resume_reading()
        upstream.resume_reading()

    def close(self) -> None:
        """Cut both sides now (used when the proxy stops)."""
        self._client.transport.abort()
        self._upstream.transport.abort()

    def side_lost(self, end: _End) -> None:
        peer = end.peer
        if not peer.lost:
            peer.transport.close()
            if self._killer is None:
                loop = asyncio.get_running_loop()
                self._killer = loop.call_later(CLOSE_GRACE_SECS, peer.transport.abort)
        elif self._killer is not None:
            self._killer.cancel()
        if self._open:
            self._open = False
            self.metrics.upgraded_connections -= 1
            self.metrics.client_connections -= 1
            self.activity.end(self.backend)
            self._on_closed(self)
