"""What every connection of one proxy shares, and what a stop must reach.

The server makes one `ProxyContext` per listener set; browser sockets, exchanges
and tunnels get it handed in and know nothing of the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from drone.config import ProxySettings
from drone.proxy import answers
from drone.proxy.headers import backend_from_host
from drone.proxy.metrics import ProxyMetrics
from drone.proxy.upstream import UpstreamPool
from drone.routes import Activity, RouteTable


class Stoppable(Protocol):
    """A browser socket, as a stop sees it."""

    def shutdown(self) -> None:
        """Stop after the request in progress."""

    def abort(self) -> None:
        """Cut it now."""


class Closable(Protocol):
    """A tunnel, as a stop sees it."""

    def close(self) -> None: ...


@dataclass(slots=True)
class ProxyContext:
    """What every connection of one proxy shares."""

    loop: asyncio.AbstractEventLoop
    settings: ProxySettings
    routes: RouteTable
    activity: Activity
    metrics: ProxyMetrics
    pool: UpstreamPool
    domain: bytes  # the cluster name as Host headers are matched against it
    secure: bool
    connections: set[Stoppable] = field(default_factory=set)
    tunnels: set[Closable] = field(default_factory=set)
    proto_line: bytes = b""
    not_ready: answers.Canned = answers.BAD_GATEWAY
    max_pipelined: int = 0
    drained: asyncio.Event | None = None  # set once stopping and the last socket closed
    _hosts: dict[bytes, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.proto_line = (
            b"x-forwarded-proto: https\r\n" if self.secure else b"x-forwarded-proto: http\r\n"
        )
        self.not_ready = answers.not_ready(self.settings.retry_after_secs)
        self.max_pipelined = max(self.settings.max_head_bytes, 64 * 1024)

    def backend_for(self, host: bytes) -> str | None:
        """The backend a Host header names, remembered: browsers send the same few."""
        hosts = self._hosts
        try:
            return hosts[host]
        except KeyError:
            pass
        if len(hosts) >= 4096:
            hosts.clear()
        backend = hosts[host] = backend_from_host(host, self.domain)
        return backend

    def forget(self, connection: Stoppable) -> None:
        """A browser socket closed or became a tunnel: a stop no longer waits for it."""
        self.connections.discard(connection)
        if self.drained is not None and not self.connections:
            self.drained.set()
