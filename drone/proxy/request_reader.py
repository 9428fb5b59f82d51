"""A browser's requests, one after another, read by h11's own readers.

h11 parses everything a browser sends: its request-line and header-line
expressions, its header validation (`h11.Request`), its Content-Length and
chunked body readers, and its errors with their status hints. What this module
leaves out is `h11.Connection`: its state machine follows both directions of a
connection whose responses the proxy writes itself, and it had to be built anew
for every request. Measured per small request, its bookkeeping and its
construction cost about as many instructions as all of the proxy's own code
(BENCHMARKS.md, "the browser's side").

So one `RequestReader` serves a socket: it keeps h11's receive buffer across
requests, picks the body reader h11 would pick, and applies h11's limit on an
incomplete head. The readers sit in h11's private modules, so pyproject.toml
pins h11's minor version, and tests/proxy/test_request_reader.py feeds the same
bytes, split every way, to this reader and to `h11.Connection` and requires the
same events and errors. One difference is deliberate: after a request that ends
the connection, h11 raises on further bytes (which failed the request in
flight); here they wait, unread, until the socket closes.
"""

from __future__ import annotations

import enum

import h11
from h11._readers import ChunkedReader, ContentLengthReader, maybe_read_from_IDLE_client
from h11._receivebuffer import ReceiveBuffer

Event = h11.Request | h11.Data | h11.EndOfMessage | h11.ConnectionClosed
NextEvent = Event | type[h11.NEED_DATA] | type[h11.PAUSED]
BodyReader = ChunkedReader | ContentLengthReader
_END = h11.EndOfMessage()  # frozen, so one serves every request without a body


class Phase(enum.Enum):
    HEAD = "head"  # waiting for a request's head
    BODY = "body"  # reading its body, which may be empty
    ENDED = "ended"  # read whole; nothing more until next_request()
    CLOSED = "closed"  # the browser closed between requests
    ERROR = "error"  # the browser broke the protocol; nothing more is read


class RequestReader:
    __slots__ = ("_body", "_buf", "_closed", "_max_head", "phase", "waiting_for_continue")

    def __init__(self, max_head: int) -> None:
        self._max_head = max_head
        self._buf = ReceiveBuffer()
        self._closed = False
        self._body: BodyReader | None = None
        self.phase = Phase.HEAD
        self.waiting_for_continue = False  # the request asked for 100-continue, no body yet

    def receive_data(self, data: bytes) -> None:
        """More bytes from the browser; b"" once it has closed its side."""
        if data:
            self._buf += data
        else:
            self._closed = True

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Bytes received and not yet parsed, and whether the browser has closed."""
        return bytes(self._buf), self._closed

    @property
    def buffered(self) -> bool:
        return bool(self._buf)

    @property
    def closed(self) -> bool:
        return self._closed

    def next_request(self) -> None:
        """The request read last is answered: read the next one from what is left."""
        self.phase = Phase.HEAD
        self._body = None
        self.waiting_for_continue = False

    def next_event(self) -> NextEvent:
        """The next event, as `h11.Connection.next_event` gives it on a server's side;
        raises `h11.RemoteProtocolError`, after which every call raises."""
        phase = self.phase
        if phase is Phase.ERROR:
            raise h11.RemoteProtocolError("Can't receive data when peer state is ERROR")
        try:
            if phase is Phase.BODY:
                return self._read_body()
            if phase is Phase.HEAD:
                return self._read_head()
        except h11.RemoteProtocolError:
            self.phase = Phase.ERROR
            raise
        except h11.LocalProtocolError as exc:
            self.phase = Phase.ERROR
            raise h11.RemoteProtocolError(str(exc), exc.error_status_hint) from None
        # Ended or closed. After a request that closes the connection (HTTP/1.0, or
        # "Connection: close") h11 raises on further bytes; here they wait like
        # any pipelined request, and go unread when the socket closes.
        if self._buf:
            return h11.PAUSED
        if self._closed:
            self.phase = Phase.CLOSED
            return h11.ConnectionClosed()
        return h11.NEED_DATA

    def _read_head(self) -> NextEvent:
        request = maybe_read_from_IDLE_client(self._buf)
        if request is None:
            if not self._buf and self._closed:
                self.phase = Phase.CLOSED
                return h11.ConnectionClosed()
            return self._need_data()
        self._body, self.waiting_for_continue = _framing(request)  # no body: None
        self.phase = Phase.BODY
        return request

    def _read_body(self) -> NextEvent:
        body = self._body
        if body is None:
            self.phase = Phase.ENDED
            return _END
        event = body(self._buf)
        if event is None:
            if not self._buf and self._closed:
                body.read_eof()  # raises: the body is incomplete
            return self._need_data()
        self.waiting_for_continue = False
        if type(event) is h11.EndOfMessage:
            self.phase = Phase.ENDED
            self._body = None
        return event

    def _need_data(self) -> type[h11.NEED_DATA]:
        if len(self._buf) > self._max_head:
            raise h11.RemoteProtocolError("Receive buffer too long", 431)
        if self._closed:
            raise h11.RemoteProtocolError("peer unexpectedly closed connection")
        return h11.NEED_DATA


def _framing(request: h11.Request) -> tuple[BodyReader | None, bool]:
    """The body reader h11 gives a request (RFC 9112 6.3: chunked beats
    Content-Length, neither means no body; h11 has already refused any other
    coding and unequal lengths), and whether it waits for 100 (Continue)."""
    length = 0
    chunked = False
    expect = False
    for name, value in request.headers.raw_items():
        size = len(name)  # only names of these sizes can matter: few are lowercased
        if size == 17 or size == 14 or size == 6:
            lower = name.lower()
            if lower == b"transfer-encoding":
                chunked = True
            elif lower == b"content-length":
                length = int(value)
            elif lower == b"expect":
                expect = expect or b"100-continue" in _tokens(value)
    if expect and request.http_version < b"1.1":
        expect = False  # ignored in HTTP/1.0 (RFC 9110 10.1.1)
    if chunked:
        return ChunkedReader(), expect
    return (ContentLengthReader(length) if length else None), expect


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]
