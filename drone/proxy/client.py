"""One browser socket: requests parsed by h11 in an explicit event loop.

Requests on a socket are served one after another (pipelined ones wait in
the reader's buffer); each accepted request becomes an `Exchange`. h11's
readers parse them (`request_reader`), and responses are written by
`response_writer`. Reading from the socket stops while a request body cannot
go anywhere yet (routing, or the backend's socket is full) and while too many
pipelined bytes wait. Output is collected per batch of events and written once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import cast

import h11

from drone.proxy import answers, auth, chunked, response_writer
from drone.proxy.context import ProxyContext
from drone.proxy.cycle import Cycle
from drone.proxy.exchange import Exchange
from drone.proxy.flow import ReadGate
from drone.proxy.headers import Framing, scan_request
from drone.proxy.request_reader import Phase, RequestReader
from drone.proxy.response_writer import Body
from drone.proxy.timer import Deadline
from drone.proxy.tunnel import Tunnel
from drone.proxy.upstream import UpstreamConnection

log = logging.getLogger(__name__)


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # answered and closing; unread request bytes are drained
    SWITCHED = "switched"  # handed over to a tunnel
    CLOSED = "closed"


class _Block(enum.IntFlag):
    """Why reading from the browser is paused."""

    ROUTING = 1  # a request body has nowhere to go yet
    UPSTREAM = 2  # the backend's socket buffer is full
    PIPELINE = 4  # too many bytes of later requests are waiting
    TURN = 8  # this socket used its share of the loop; the others go first


# One socket's events may take this long per turn of the loop (h11 spends some 10 us
# on each event, and a body in 1-byte chunks is one event per byte); it then rests
# for REST_SECS (the loop's timers count whole milliseconds), so a socket that never
# stops sending tiny chunks gets about a tenth of the loop. A body in chunks of
# ordinary size, or framed by Content-Length, is a few events per read and never rests.
TURN_SECS = 0.0001
REST_SECS = 0.001
CLOCK_EVERY = 4  # events between looks at the clock


class ClientConnection(asyncio.Protocol):
    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.ip = b""
        self.exchange: Exchange | None = None
        self.state = State.OPEN
        self.stopping = False
        self._requests = RequestReader(ctx.settings.max_head_bytes)
        self._cycle = Cycle()
        self._deadline = Deadline(ctx.loop, self._on_deadline)
        self._reading = ReadGate()  # held for the reasons in _Block
        self._turn: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []

    def __repr__(self) -> str:
        return f"<ClientConnection {self.ip.decode()} {self.state.value} {self.exchange!r}>"

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._reading.attach(self.transport)
        peer = transport.get_extra_info("peername")
        self.ip = str(peer[0]).encode("ascii") if peer else b"unknown"
        self.ctx.connections.add(self)
        self.ctx.metrics.client_connections += 1
        self._deadline.set_in(self.ctx.settings.head_timeout_secs)

    def data_received(self, data: bytes) -> None:
        self.ctx.metrics.received_bytes += len(data)
        if self.state is not State.OPEN:
            return  # draining after an error answer
        if self.exchange is None and self._cycle.pending is None:
            if not self._cycle.head_started:
                self._cycle.head_started = True
                self._deadline.set_in(self.ctx.settings.head_timeout_secs)
        elif self._requests.phase is Phase.ENDED:
            self._cycle.pipelined += len(data)
            if self._cycle.pipelined > self.ctx.max_pipelined:
                self._block(_Block.PIPELINE)
        self._requests.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool | None:
        if self.state is not State.OPEN:
            return None
        self._requests.receive_data(b"")
        self._handle_events()
        if self.ctx.secure:
            return None  # TLS has no half-close: the transport closes now
        return True  # a response still due is sent before closing

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._reading.closed = True
        self._stop_timers()
        ctx = self.ctx
        ctx.metrics.client_connections -= 1
        ctx.forget(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.client_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_full(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_full(False)

    # -- the request loop

    def _handle_events(self) -> None:
        """Act on what h11 has parsed, until it needs more, a request is being
        answered, or reading is held. The reader is asked afresh each time round:
        a request answered here (refused, say) lets the next one be read at once."""
        body: list[bytes | bytearray] = []  # request body data of this turn, forwarded as one write
        began = time.perf_counter()
        events = 0
        while not self._reading.held and self.state is State.OPEN:
            try:
                event = self._requests.next_event()
            except h11.RemoteProtocolError as exc:
                self._forward_body(body)
                self._on_protocol_error(exc)
                break
            kind = type(event)
            if kind is h11.Data:
                body.append(event.data)  # type: ignore[union-attr]
                events += 1
                if not events % CLOCK_EVERY and time.perf_counter() - began > TURN_SECS:
                    self._forward_body(body)
                    self._rest()
                    break
                continue
            if body:
                self._forward_body(body)
                if self.state is not State.OPEN:
                    break  # the body ended this exchange (too large)
            if kind is h11.Request:
                self._on_request(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._cycle.request_ended = True
                if self.exchange is not None:
                    self.exchange.request_end()
                    break  # the reader says PAUSED until the response is sent
                if self._cycle.pending is not None:
                    self._send_canned(self._cycle.pending)
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                break
            elif kind is h11.ConnectionClosed:
                if self.exchange is None and self._cycle.pending is None:
                    self._close()
                break
        if self.state is State.OPEN:
            self._forward_body(body)
        if self._out:
            self.flush()

    def _forward_body(self, body: list[bytes | bytearray]) -> None:
        """Hand the body data parsed in this turn to the exchange at once, so that a
        flood of tiny chunks becomes a few writes toward the backend, not one each."""
        if not body:
            return
        # h11 hands some body data over as a bytearray; bytes() copies only those
        data = bytes(body[0]) if len(body) == 1 else b"".join(body)
        body.clear()
        if self.exchange is not None:
            self.exchange.request_data(data)

    def _rest(self) -> None:
        """This socket used its turn: stop reading it, and let every other one go
        first for a while, so one sender of tiny chunks cannot starve the rest."""
        self._block(_Block.TURN)
        self._turn = self.ctx.loop.call_later(REST_SECS, self._end_rest)

    def _end_rest(self) -> None:
        self._turn = None
        self._unblock(_Block.TURN)

    def _on_request(self, event: h11.Request) -> None:
        self._cycle.head_started = False
        self._deadline.clear()
        self._cycle.pipelined = 0
        ctx = self.ctx
        scan = scan_request(event.headers.raw_items())
        http10 = event.http_version == b"1.0"
        self._cycle.peer = response_writer.Peer(
            event.method == b"HEAD", http10, not http10 and b"close" not in scan.connection
        )
        has_body = scan.framing is not Framing.NONE
        if scan.head_size + len(event.target) > ctx.settings.max_head_bytes:
            self._reject(answers.HEAD_TOO_LARGE, True)  # and close, like h11's own 431
            return
        if scan.chunked and scan.content_length is not None:
            self._reject(answers.AMBIGUOUS_LENGTH, True)
            return
        if scan.duplicate_host:
            self._reject(answers.DUPLICATE_HOST, True)
            return
        if scan.control_character:
            self._reject(answers.CONTROL_CHARACTER, True)
            return
        if http10:
            if scan.chunked:  # framing that 1.0 does not have (RFC 9112 6.1)
                self._reject(answers.CHUNKED_HTTP10, True)
                return
            scan.upgrade = None  # a server ignores Upgrade in HTTP/1.0 (RFC 9110 7.8)
        if event.method == b"CONNECT":
            self._reject(answers.METHOD_NOT_ALLOWED, True)
            return
        backend = ctx.backend_for(scan.host) if scan.host else None
        route = ctx.routes.get(backend) if backend is not None else None
        if route is None or backend is None:
            self._reject(answers.NOT_FOUND, has_body)
            return
        if route.bearer_token is not None:
            token = route.bearer_token.encode()
            if event.method == b"GET" and auth.is_auth_target(event.target):
                self._reject(self._auth_answer(event.target, token), has_body)
                return
            offered = [bearer[2] for bearer in scan.bearer]
            offered += scan.cookie_tokens
            verdict = auth.check(token, offered)
            if verdict is not auth.Verdict.ALLOWED:
                missing = verdict is auth.Verdict.MISSING
                self._reject(answers.MISSING_TOKEN if missing else answers.WRONG_TOKEN, has_body)
                return
            scan.bearer = [bearer for bearer in scan.bearer if not auth.matches(token, bearer[2])]
        limit = ctx.settings.max_body_bytes
        if limit is not None and scan.content_length is not None and scan.content_length > limit:
            self._reject(answers.TOO_LARGE, True)
            return
        exchange = Exchange(self, self._cycle, ctx, backend, event.method, event.target, scan)
        self.exchange = exchange
        exchange.start(route)

    def _auth_answer(self, target: bytes, token: bytes) -> answers.Canned:
        answer = auth.auth_endpoint(target, token, self.ctx.secure)
        if answer.status == 302:
            return answers.redirect(answer.location, answer.set_cookie)
        if answer.status == 403:
            return answers.WRONG_TOKEN
        return answers.make(400, f"400 Bad Request: {answer.reason}")

    def _reject(self, canned: answers.Canned, has_body: bool) -> None:
        """Answer a request the proxy will not forward: right away if its body is
        not going to be read, else once the (empty) request has ended."""
        if has_body:
            self._send_canned(canned)
        else:
            self._cycle.pending = canned

    def _on_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        canned = answers.BY_HINT.get(exc.error_status_hint, answers.BAD_REQUEST)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("malformed request from %s: %s", self.ip.decode(), exc)
        if self.exchange is not None:
            self.exchange.client_garbled(canned)
        else:
            self._send_canned(canned)

    # -- used by the exchange

    def block_routing(self, on: bool) -> None:
        if on:
            self._block(_Block.ROUTING)
        else:
            self._unblock(_Block.ROUTING)

    def block_upstream(self, on: bool) -> None:
        if on:
            self._block(_Block.UPSTREAM)
        else:
            self._unblock(_Block.UPSTREAM)

    def attached(self) -> None:
        """The exchange reached its backend: the request body may flow now."""
        if self._requests.waiting_for_continue:
            self._out.append(response_writer.CONTINUE)
            self.flush()
        self._unblock(_Block.ROUTING)

    def send_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        sized: bool,
        close: bool,
    ) -> None:
        """Queue a backend's response head (its headers checked by the response reader)."""
        head, self._cycle.body, self._cycle.close_after = response_writer.response_head(
            status, reason, headers, sized, self._cycle.peer, close or self.stopping
        )
        self.ctx.metrics.count_response(status)
        self._out.append(head)

    def send_data(self, data: bytes) -> None:
        body = self._cycle.body
        if body is Body.CHUNKED:
            self._out += chunked.chunk(data)
        elif body is not Body.NONE:
            self._out.append(data)

    def send_end(self) -> None:
        if self._cycle.body is Body.CHUNKED:
            self._out.append(chunked.LAST_CHUNK)
        self.flush()
        self._cycle_done()

    def send_error(self, canned: answers.Canned) -> None:
        self._send_canned(canned)

    def flush(self) -> None:
        out = self._out
        if not out or self.transport is None:
            return
        self._out = []
        if len(out) == 1:
            data = out[0]
            self.ctx.metrics.sent_bytes += len(data)
            self.transport.write(data)
            return
        size = sum(map(len, out))
        self.ctx.metrics.sent_bytes += size
        if size < 16384:
            self.transport.write(b"".join(out))
        else:
            self.transport.writelines(out)

    def abort(self) -> None:
        """Cut the socket: a response already begun cannot be turned into an error."""
        self.exchange = None
        self._out = []
        self.state = State.CLOSED
        self._reading.closed = True
        if self.transport is not None:
            self.transport.abort()

    def switch_protocols(
        self, upstream: UpstreamConnection, headers: list[tuple[bytes, bytes]], backend: str
    ) -> None:
        assert self.transport is not None
        if not self._cycle.request_ended or self._cycle.body is not None:
            # The backend switched before the request had ended: nothing sane to relay.
            upstream.close()
            self.abort()
            return
        self.ctx.metrics.count_response(101)
        self._out.append(response_writer.switching_head(headers))
        self.flush()
        from_client = self._requests.trailing_data[0]
        up_transport, from_upstream, upstream_paused = upstream.detach()
        self.exchange = None
        self.state = State.SWITCHED
        self._stop_timers()
        ctx = self.ctx
        ctx.forget(self)
        tunnel = Tunnel(
            backend, self.transport, up_transport, ctx.activity, ctx.metrics, ctx.tunnels.discard
        )
        ctx.tunnels.add(tunnel)
        self._reading.closed = True  # the tunnel owns the transport now
        tunnel.start(from_client, from_upstream, bool(self._reading.held), upstream_paused)

    # -- shutdown

    def shutdown(self) -> None:
        """Stop after the request in progress; an idle socket closes now."""
        self.stopping = True
        if self.exchange is None and self._cycle.pending is None and self.state is State.OPEN:
            self._close()

    # -- internals

    def _send_canned(self, canned: answers.Canned) -> None:
        self._cycle.pending = None
        if self._cycle.body is not None:
            self.abort()  # a response has begun: it cannot become another one
            return
        data, self._cycle.close_after = response_writer.canned_response(
            canned, self._cycle.peer, self.stopping or not self._cycle.request_ended
        )
        self._cycle.body = Body.NONE
        self.ctx.metrics.count_response(canned.status)
        self._out.append(data)
        self.flush()
        self._cycle_done()

    def _cycle_done(self) -> None:
        self.exchange = None
        if self.state is not State.OPEN:
            return
        if self._cycle.request_ended and not self._cycle.close_after and not self.stopping:
            # The next request, from what arrived after this one.
            requests = self._requests
            requests.next_request()
            waiting, closed = requests.buffered, requests.closed
            self._cycle = Cycle(head_started=bool(waiting))
            self._reading.release_all()
            if waiting:  # the next request has begun arriving already
                self._deadline.set_in(self.ctx.settings.head_timeout_secs)
            else:
                self._deadline.set_in(self.ctx.settings.keepalive_timeout_secs)
            if waiting or closed:
                # On the next turn, not from inside whoever ended this cycle (the
                # backend's socket, or this socket's own event loop above, which
                # goes on with the next request by itself).
                self.ctx.loop.call_soon(self._handle_events)
        elif self._requests.phase is Phase.BODY or self._requests.phase is Phase.ERROR:
            self._linger()
        else:
            self._close()

    def _linger(self) -> None:
        """Close after an answer sent before the request was read whole.

        Closing with unread bytes makes the kernel reset the connection, and
        the browser may lose the answer; so the write side is shut and what
        still arrives is read and dropped for a short while.
        """
        assert self.transport is not None
        self.state = State.CLOSING
        self._reading.release_all()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._deadline.set_in(self.ctx.settings.linger_secs)

    def _close(self) -> None:
        if self.state is State.OPEN or self.state is State.CLOSING:
            self.state = State.CLOSED
            self._reading.closed = True
            self._stop_timers()
            if self.transport is not None:
                self.transport.close()

    def _block(self, why: _Block) -> None:
        self._reading.hold(why)

    def _unblock(self, why: _Block) -> None:
        if self._reading.release(why):
            self._handle_events()

    def _stop_timers(self) -> None:
        self._deadline.cancel()
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None

    def _on_deadline(self) -> None:
        if self.state is State.CLOSING:
            self._close()
            return
        if (
            self.state is not State.OPEN
            or self.exchange is not None
            or self._cycle.pending is not None
        ):
            return
        if self._cycle.head_started:
            self._send_canned(answers.REQUEST_TIMEOUT)
        else:
            self._close()  # an idle keep-alive socket
