"""An incremental reader for a backend's HTTP/1.1 responses.

The browser's side is parsed by h11; the backend's side by this small reader,
because it is on every request's path and h11's general machinery costs more
than the rest of the proxy together. It does only what a proxy needs: the
status, the headers the browser may see, and the body's framing (Content-Length,
chunked, or until the socket closes), with strict checks — anything it does
not understand is a `ResponseError`, and the browser gets a 502. Header names
and values are checked here once, so the browser's side writes them on as they are.

The reader is pure: it is fed bytes and calls its sink; I/O is elsewhere.
"""

from __future__ import annotations

import enum
import re
from typing import Protocol

from drone.proxy.headers import HOP_BY_HOP

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_BAD_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
# Header lines after the status line: a token, a colon, then visible characters,
# spaces and tabs only (RFC 9110 5.1, 5.5), so they can be written on unchanged.
_FIELDS = re.compile(rb"(?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)*")
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
_MAX_LINE = 8192  # chunk-size and trailer lines


class ResponseError(Exception):
    """The backend sent something that is not a valid HTTP/1.1 response."""


class State(enum.Enum):
    HEAD = "head"
    LENGTH = "length"  # Content-Length body
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_END = "chunk-end"  # the CRLF after a chunk
    TRAILERS = "trailers"
    UNTIL_EOF = "until-eof"  # no framing: the body ends when the socket does
    DONE = "done"
    SWITCHED = "switched"  # after a 101, the bytes are no longer HTTP


class Sink(Protocol):
    def on_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], sized: bool
    ) -> None:
        """A final head; `sized`: its headers give the body a Content-Length."""

    def on_switch(self, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...


class ResponseReader:
    __slots__ = (
        "_buf",
        "_head_only",
        "_max_head",
        "_remaining",
        "_sink",
        "_switch_headers",
        "_upgrade",
        "keep_alive",
        "paused",
        "state",
    )

    def __init__(self, sink: Sink, max_head: int) -> None:
        self._sink = sink
        self._max_head = max_head
        self._buf = bytearray()
        self._remaining = 0
        self._head_only = False
        self._upgrade = False
        self._switch_headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.paused = False  # set by the sink to stop deliveries until resume()
        self.state = State.DONE

    def start(self, head_only: bool, upgrade: bool) -> None:
        """Expect the response to a new request (`head_only` for HEAD requests)."""
        self._head_only = head_only
        self._upgrade = upgrade
        self.keep_alive = False
        self.state = State.HEAD

    @property
    def reusable(self) -> bool:
        """After DONE: whether the socket may carry another request."""
        return self.state is State.DONE and self.keep_alive and not self._buf

    def rest(self) -> bytes:
        """What was read past the end of the response (the tunnel's first bytes after a 101)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def feed(self, data: bytes) -> None:
        if not self._buf and not self.paused:
            # The common cases skip the buffer: a whole head (and maybe its whole
            # body) in one read, or body bytes that all belong to this response.
            if self.state is State.HEAD:
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    self._read_head(data[:end])
                    data = data[end + 4 :]
                    if self._head_ended():
                        self._buf += data  # kept before the sink hears, so it sees them
                        self._head_done()
                        return
                    if not data:
                        return
            if self.state is State.LENGTH and not self.paused:
                remaining = self._remaining
                if len(data) <= remaining:
                    self._remaining = remaining - len(data)
                    self._sink.on_data(data)
                    if self._remaining == 0:
                        self._finish()
                    return
        self._buf += data
        self.run()

    def feed_eof(self) -> None:
        """The socket closed: ends an unframed body, anything else is an error."""
        if not self.paused:
            self.run()
        if self.state is State.UNTIL_EOF and not self.paused:
            self._finish()
        elif self.state is not State.DONE and not self.paused:
            raise ResponseError(f"connection closed in state {self.state.value}")

    def run(self) -> None:
        buf = self._buf
        while not self.paused:
            state = self.state
            if state is State.LENGTH or state is State.CHUNK_DATA:
                if not buf:
                    return
                n = min(len(buf), self._remaining)
                chunk = bytes(buf[:n])
                del buf[:n]
                self._remaining -= n
                if self._remaining == 0:
                    if state is State.LENGTH:
                        self._sink.on_data(chunk)
                        self._finish()
                        continue
                    self.state = State.CHUNK_END
                self._sink.on_data(chunk)
            elif state is State.HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self._max_head:
                        raise ResponseError("response head too long")
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._read_head(head)
                if self._head_ended():
                    self._head_done()
                    return
            elif state is State.CHUNK_SIZE:
                line = self._line()
                if line is None:
                    return
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise ResponseError("bad chunk size")
                self._remaining = int(size, 16)
                self.state = State.CHUNK_DATA if self._remaining else State.TRAILERS
            elif state is State.CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ResponseError("chunk not followed by CRLF")
                del buf[:2]
                self.state = State.CHUNK_SIZE
            elif state is State.TRAILERS:
                line = self._line()
                if line is None:
                    return
                if not line:
                    self._finish()  # trailers are not relayed
            elif state is State.UNTIL_EOF:
                if buf:
                    chunk = bytes(buf)
                    buf.clear()
                    self._sink.on_data(chunk)
                return
            else:  # DONE or SWITCHED: later bytes wait for rest() or make the socket unusable
                return

    def _line(self) -> bytes | None:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > _MAX_LINE:
                raise ResponseError("line too long")
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        return line

    def _finish(self) -> None:
        self.state = State.DONE
        self._sink.on_end()

    def _head_ended(self) -> bool:
        return self.state is State.DONE or self.state is State.SWITCHED

    def _head_done(self) -> None:
        """Tell the sink a response ended with its head, or switched protocols.

        Called once any bytes after the head are in the buffer: the sink may
        decide whether the socket is reusable, or take those bytes for a tunnel.
        """
        if self.state is State.SWITCHED:
            self._sink.on_switch(self._switch_headers)
        else:
            self._sink.on_end()

    def _read_head(self, head: bytes) -> None:
        """Parse a head, call `on_head` for a final one and set the next state;
        for DONE and SWITCHED the caller calls `_head_done` next."""
        lines = head.split(b"\r\n")
        line = lines[0]
        if not _FIELDS.fullmatch(head, len(line)):
            raise ResponseError("bad header line")
        if line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit() and line[12:13] in (b" ", b""):
            minor, status, reason = b"1", int(line[9:12]), line[13:]  # the usual case
            if _BAD_REASON.search(reason):  # h11 writes the reason as it is
                raise ResponseError("bad reason phrase")
        else:
            match = _STATUS_LINE.fullmatch(line)
            if match is None:
                raise ResponseError("bad status line")
            minor, code, reason = match.groups()
            status = int(code)
        if status < 100:
            raise ResponseError("bad status code")
        headers: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        codings: list[bytes] | None = None
        tokens: set[bytes] | None = None
        upgrade: bytes | None = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
            lower = name.lower()
            if lower not in HOP_BY_HOP:
                if lower == b"content-length":
                    one = _one_length(value)
                    if length is not None and one != length:
                        raise ResponseError("conflicting Content-Length")
                    length = one
                headers.append((name, value))
            elif lower == b"transfer-encoding":
                codings = (codings or []) + [
                    c.strip(b" \t").lower() for c in value.split(b",") if c.strip()
                ]
            elif lower == b"connection":
                tokens = (tokens or set()) | {t.strip(b" \t").lower() for t in value.split(b",")}
            elif lower == b"upgrade":
                upgrade = value
        if tokens is not None:
            named = tokens - _CONNECTION_OPTIONS
            if named:
                headers = [(n, v) for n, v in headers if n.lower() not in named]
        if status < 200:
            if status == 101:
                if not self._upgrade:
                    raise ResponseError("101 without an upgrade asked for")
                headers.append((b"connection", b"upgrade"))
                if upgrade is not None:
                    headers.append((b"upgrade", upgrade))
                self.state = State.SWITCHED
                self._switch_headers = headers
            return  # other 1xx are interim: the real head follows
        self.keep_alive = minor == b"1" and (tokens is None or b"close" not in tokens)
        if self._head_only or status == 204 or status == 304:
            self.state = State.DONE
            self._sink.on_head(status, reason or b"", headers, length is not None)
            return
        if codings is not None:
            if length is not None:
                self.keep_alive = False  # both framings: the socket cannot be trusted again
                headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
                length = None
            if codings and codings[-1] == b"chunked":
                self.state = State.CHUNK_SIZE
            else:
                self.state = State.UNTIL_EOF
                self.keep_alive = False
        elif length is not None:
            self._remaining = int(length)
            self.state = State.LENGTH if self._remaining else State.DONE
        else:
            self.state = State.UNTIL_EOF
            self.keep_alive = False
        self._sink.on_head(status, reason or b"", headers, length is not None)


def _one_length(value: bytes) -> bytes:
    """A Content-Length value (a list of equal values counts as one), checked."""
    if b"," in value:
        values = {v.strip(b" \t") for v in value.split(b",")}
        if len(values) != 1:
            raise ResponseError("conflicting Content-Length")
        value = values.pop()
    if not value.isdigit() or len(value) > 18:
        raise ResponseError("bad Content-Length")
    return value
