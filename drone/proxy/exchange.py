"""One request relayed from a browser to a backend and its response relayed back.

An exchange owns the request's begin/end pair on the activity tracker: it
begins when the request is accepted for a backend and ends exactly once, when
the response has been handed to the browser's socket, when an error answer has
been sent, or when either side goes away.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from drone.proxy import answers
from drone.proxy.context import ProxyContext
from drone.proxy.cycle import Cycle
from drone.proxy.headers import Framing, RequestScan, request_head
from drone.proxy.upstream import Failure, Key, UpstreamConnection
from drone.routes import Route, RouteState

log = logging.getLogger(__name__)


class BrowserSide(Protocol):
    """What an exchange needs from the browser's socket, and no more."""

    @property
    def ip(self) -> bytes: ...

    def block_routing(self, on: bool) -> None:
        """Stop (or resume) reading the request body: it has nowhere to go yet."""

    def block_upstream(self, on: bool) -> None:
        """Stop (or resume) reading the request body: the backend's socket is full."""

    def attached(self) -> None:
        """The backend is reached: the request body may flow."""

    def send_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        sized: bool,
        close: bool,
    ) -> None: ...

    def send_data(self, data: bytes) -> None: ...

    def send_end(self) -> None:
        """The response is complete: this request's cycle is over."""

    def send_error(self, canned: answers.Canned) -> None:
        """Answer with the proxy's own response instead of the backend's."""

    def flush(self) -> None: ...

    def abort(self) -> None:
        """Cut the socket: a response that has begun cannot become an error."""

    def switch_protocols(
        self, upstream: UpstreamConnection, headers: list[tuple[bytes, bytes]], backend: str
    ) -> None:
        """The backend accepted an upgrade: hand both sockets to a tunnel."""


class Phase(enum.Enum):
    ROUTING = "routing"  # holding until Ready, or connecting to the backend
    SENDING = "sending"  # request going to the backend, no response head yet
    RESPONDING = "responding"  # response head sent to the browser
    FINISHED = "finished"


class Exchange:
    __slots__ = (
        "active",
        "backend",
        "body_bytes",
        "chunked",
        "client",
        "ctx",
        "cycle",
        "framing",
        "head",
        "key",
        "method",
        "phase",
        "sent_at",
        "task",
        "upgrade",
        "upstream",
    )

    def __init__(
        self,
        client: BrowserSide,
        cycle: Cycle,
        ctx: ProxyContext,
        backend: str,
        method: bytes,
        target: bytes,
        scan: RequestScan,
    ) -> None:
        self.client = client
        self.cycle = cycle  # the request's facts, shared with the browser's side
        self.ctx = ctx
        self.backend = backend
        self.method = method
        self.framing = scan.framing
        self.chunked = scan.chunked
        self.upgrade = scan.upgrade is not None
        self.head = request_head(method, target, scan, client.ip, ctx.proto_line, True)
        self.body_bytes = 0
        self.upstream: UpstreamConnection | None = None
        self.key: Key = ("", 0)
        self.phase = Phase.ROUTING
        self.task: asyncio.Task[None] | None = None
        self.sent_at = 0.0
        ctx.activity.begin(backend)
        self.active = True

    def __repr__(self) -> str:
        return (
            f"<Exchange {self.backend} {self.method.decode('ascii', 'replace')} {self.phase.value}>"
        )

    def start(self, route: Route) -> None:
        if route.state is RouteState.READY:
            self._use_route(route)
        else:
            self._spawn(self._hold())

    # -- from the browser's side

    def request_data(self, data: bytes) -> None:
        self.body_bytes += len(data)
        limit = self.ctx.settings.max_body_bytes
        if limit is not None and self.body_bytes > limit:
            self._fail(answers.TOO_LARGE)
            return
        if self.upstream is not None:
            self.upstream.write_body(data)

    def request_end(self) -> None:
        """The browser's side has read the whole request (`cycle.request_ended`)."""
        if self.upstream is not None:
            self.upstream.end_body(self.ctx.settings.upstream_response_timeout_secs)

    def client_full(self, full: bool) -> None:
        """The browser's socket buffer filled (or drained): pause (or resume) the backend."""
        upstream = self.upstream
        if upstream is not None:
            if full:
                upstream.pause()
            else:
                upstream.resume()

    def client_garbled(self, canned: answers.Canned) -> None:
        """The browser's request body broke the protocol."""
        self._fail(canned)

    def client_lost(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self._finish()

    # -- from the backend's side

    def upstream_full(self, full: bool) -> None:
        self.client.block_upstream(full)

    def on_response(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], sized: bool
    ) -> None:
        self.ctx.metrics.observe_upstream(self.ctx.loop.time() - self.sent_at)
        self.client.send_head(status, reason, headers, sized, close=not self.cycle.request_ended)
        self.phase = Phase.RESPONDING

    def on_response_data(self, data: bytes) -> None:
        self.client.send_data(data)

    def flush(self) -> None:
        self.client.flush()

    def on_response_end(self, upstream: UpstreamConnection) -> None:
        self.upstream = None
        if self.cycle.request_ended and upstream.finish_cycle():
            self.ctx.pool.put(upstream)
        else:
            upstream.close()
        self._finish()
        self.client.send_end()

    def on_switch(self, upstream: UpstreamConnection, headers: list[tuple[bytes, bytes]]) -> None:
        self.upstream = None
        # The tunnel begins its own activity before this request's ends, so the
        # backend is never idle in between.
        self.client.switch_protocols(upstream, headers, self.backend)
        self._finish()

    def on_upstream_failure(self, failure: Failure, retryable: bool) -> None:
        self.upstream = None
        if self.phase is Phase.FINISHED:
            return
        if (
            retryable
            and self.phase is Phase.SENDING
            and self.framing is Framing.NONE
            and not self.upgrade
        ):
            # A pooled connection the backend had already closed: nothing was
            # answered and nothing but the head was sent, so try a fresh one.
            self.phase = Phase.ROUTING
            self._spawn(self._connect())
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("backend failed: %s", failure.value, extra={"backend": self.backend})
        timeout = failure is Failure.TIMEOUT
        self._fail(answers.GATEWAY_TIMEOUT if timeout else answers.BAD_GATEWAY)

    # -- internals

    def _use_route(self, route: Route) -> None:
        self.key = (route.host, route.port)
        upstream = self.ctx.pool.take(self.key)
        if upstream is not None:
            self._attach(upstream)
        else:
            self._spawn(self._connect())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.framing is not Framing.NONE:
            self.client.block_routing(True)
        self.task = self.ctx.loop.create_task(coro)

    async def _hold(self) -> None:
        ctx = self.ctx
        try:
            route = await ctx.routes.wait_ready(self.backend, ctx.settings.hold_until_ready_secs)
        except Exception:  # a bug must not leave the browser waiting or the backend busy
            log.exception("holding a request failed", extra={"backend": self.backend})
            self.task = None
            self._fail(answers.BAD_GATEWAY)
            return
        self.task = None
        if self.phase is Phase.FINISHED:
            return
        if route is None:
            gone = ctx.routes.get(self.backend) is None
            self._fail(answers.NOT_FOUND if gone else ctx.not_ready)
            return
        self._use_route(route)

    async def _connect(self) -> None:
        ctx = self.ctx
        try:
            upstream = await ctx.pool.connect(self.key)
        except TimeoutError:
            self._connect_failed(answers.GATEWAY_TIMEOUT)
            return
        except OSError:
            self._connect_failed(answers.BAD_GATEWAY)
            return
        except Exception:  # a bug must not leave the browser waiting or the backend busy
            log.exception("connecting to %s:%d failed", *self.key, extra={"backend": self.backend})
            self._connect_failed(answers.BAD_GATEWAY)
            return
        self.task = None
        if self.phase is Phase.FINISHED:
            upstream.close()
            return
        self._attach(upstream)

    def _connect_failed(self, canned: answers.Canned) -> None:
        self.task = None
        self.ctx.metrics.upstream_connect_errors += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("cannot connect to %s:%d", *self.key, extra={"backend": self.backend})
        if self.phase is not Phase.FINISHED:
            self._fail(canned)

    def _attach(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        self.phase = Phase.SENDING
        self.sent_at = self.ctx.loop.time()
        upstream.begin(self, self.head, self.method, self.upgrade)
        if self.cycle.request_ended:
            upstream.end_body(self.ctx.settings.upstream_response_timeout_secs)
        self.client.attached()

    def _fail(self, canned: answers.Canned) -> None:
        """Answer the browser with the proxy's own error, or cut it off if a response began."""
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        responding = self.phase is Phase.RESPONDING
        self._finish()
        if responding:
            self.client.abort()
        else:
            self.client.send_error(canned)

    def _finish(self) -> None:
        self.phase = Phase.FINISHED
        if self.active:
            self.active = False
            self.ctx.activity.end(self.backend)
