"""The request reader parses as `h11.Connection` does, event for event.

Each input is fed to both, whole, a byte at a time and split at random points,
with and without the browser closing at the end; both transcripts (every event
with its fields, the 100-continue flag after each head, errors with their
status hints, and what is left unread) must be equal. After a request that ends
the connection the comparison stops: there h11 refuses further bytes, and the
proxy reads no further anyway (the reader's docstring says so).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Protocol

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drone.proxy.request_reader import RequestReader

MAX_HEAD = 1024


class Side(Protocol):
    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Any: ...

    @property
    def waiting_for_continue(self) -> bool: ...

    @property
    def trailing_data(self) -> tuple[bytes, bool]: ...

    def next_request(self) -> None: ...


class H11Side:
    """h11's own connection, made anew for each request as the proxy once did."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    def receive_data(self, data: bytes) -> None:
        self.conn.receive_data(data)

    def next_event(self) -> Any:
        return self.conn.next_event()

    @property
    def waiting_for_continue(self) -> bool:
        return self.conn.they_are_waiting_for_100_continue

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        return self.conn.trailing_data

    def next_request(self) -> None:
        waiting, closed = self.conn.trailing_data
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        if waiting:
            self.conn.receive_data(waiting)
        if closed:
            self.conn.receive_data(b"")


def describe(event: Any) -> tuple[Any, ...]:
    kind = type(event)
    if kind is h11.Request:
        return ("request", event.method, event.target, event.http_version,
                list(event.headers.raw_items()))  # fmt: skip
    if kind is h11.Data:
        return ("data", bytes(event.data), event.chunk_start, event.chunk_end)
    if kind is h11.EndOfMessage:
        return ("end", list(event.headers.raw_items()))
    return (kind.__name__,)


def closes(request: h11.Request) -> bool:
    if request.http_version != b"1.1":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in request.headers
    )


def transcript(side: Side, pieces: list[bytes], eof: bool) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    queue = [*pieces, b""] if eof else list(pieces)
    closing = False
    for _ in range(10_000):
        try:
            event = side.next_event()
        except h11.RemoteProtocolError as exc:
            out.append(("error", exc.error_status_hint))
            return out
        if event is h11.NEED_DATA:
            if not queue:
                out.append(("need data", side.trailing_data))
                return out
            side.receive_data(queue.pop(0))
            continue
        if event is h11.PAUSED:
            out.append(("paused", side.trailing_data))
            return out
        out.append(describe(event))
        if type(event) is h11.Request:
            out.append(("continue?", side.waiting_for_continue))
            closing = closes(event)
        elif type(event) is h11.ConnectionClosed:
            return out
        elif type(event) is h11.EndOfMessage:
            if closing:
                out.append(("rest", side.trailing_data))
                return out
            side.next_request()
    raise AssertionError(f"no end after 10,000 events: {out[-5:]}")


def splits(data: bytes, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), min(4, len(data) - 1))) if data else []
        bounds = [0, *cuts, len(data)]
        ways.append([data[a:b] for a, b in itertools.pairwise(bounds)])
    return ways


def assert_same(data: bytes, seed: int = 0) -> None:
    for pieces in splits(data, seed):
        for eof in (False, True):
            theirs = transcript(H11Side(), pieces, eof)
            ours = transcript(RequestReader(MAX_HEAD), pieces, eof)
            assert ours == theirs, (data, pieces, eof)


HOST = b"Host: a.example\r\n"
CASES = {
    "get": b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\n" + HOST + b"\r\nGET /2 HTTP/1.1\r\n" + HOST + b"\r\n",
    "length body": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
    "length body then next": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n"
    + HOST
    + b"\r\n",
    "length zero": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
    "length repeated": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3, 3\r\n\r\nabc",
    "length conflicting": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3, 4\r\n\r\nabc",
    "length not digits": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 3x\r\n\r\nabc",
    "length short then close": b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 9\r\n\r\nabc",
    "chunked": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x=y\r\nd\r\n0\r\n\r\n",
    "chunked trailers": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-T: 1\r\n\r\n",
    "chunked bad size": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "chunked bad footer": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",
    "chunked unfinished": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
    "chunked beats length": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    "gzip coding": b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
    "two codings": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "continue": b"PUT / HTTP/1.1\r\n"
    + HOST
    + b"Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    "continue listed": b"PUT / HTTP/1.1\r\n"
    + HOST
    + b"Expect: foo, 100-Continue\r\nContent-Length: 1\r\n\r\nx",
    "continue in 1.0": b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    "http/1.0": b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "close": b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "upgrade": b"GET /ws HTTP/1.1\r\n"
    + HOST
    + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
    "connect": b"CONNECT a.example:443 HTTP/1.1\r\n" + HOST + b"\r\n",
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: one\r\n two\r\n\r\n",
    "fold first": b"GET / HTTP/1.1\r\n x: y\r\n" + HOST + b"\r\n",
    "bare newlines": b"GET / HTTP/1.1\n" + HOST.replace(b"\r", b"") + b"X: y\n\n",
    "leading blank line": b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "garbage line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "bad method": b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n",
    "bad target": b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n",
    "bad version": b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + HOST + b"X-A : b\r\n\r\n",
    "empty name": b"GET / HTTP/1.1\r\n" + HOST + b": b\r\n\r\n",
    "nul in value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
    "control in value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\x7f\r\n\r\n",
    "head too long": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 2000 + b"\r\n\r\n",
    "endless head": b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200,
    "half a head": b"GET / HTTP/1.1\r\n" + HOST,
    "nothing": b"",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_reads_as_h11_reads_it(name: str) -> None:
    assert_same(CASES[name])


def test_a_reader_reads_one_request_after_another() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.receive_data(CASES["pipelined"])
    first = reader.next_event()
    assert type(first) is h11.Request and first.target == b"/1"
    assert type(reader.next_event()) is h11.EndOfMessage
    assert reader.next_event() is h11.PAUSED  # until the first one is answered
    reader.next_request()
    second = reader.next_event()
    assert type(second) is h11.Request and second.target == b"/2"
    assert type(reader.next_event()) is h11.EndOfMessage
    assert reader.next_event() is h11.NEED_DATA
    assert reader.trailing_data == (b"", False)


def test_after_an_error_every_call_raises() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.receive_data(CASES["bad method"])
    with pytest.raises(h11.RemoteProtocolError):
        reader.next_event()
    with pytest.raises(h11.RemoteProtocolError, match="ERROR"):
        reader.next_event()


PIECES = [
    b"GET", b"POST", b" ", b"/", b"/x?y", b" HTTP/1.1", b" HTTP/1.0", b"\r\n", b"\n",
    b"\r\n\r\n", b"Host: a", b"Content-Length: ", b"Transfer-Encoding: chunked",
    b"Connection: close", b"Expect: 100-continue", b": ", b"0", b"3", b"12", b"abc",
    b"\t", b",", b";", b"\x00", b"\x7f", b"\xff", b"X-Y", b" \t",
]  # fmt: skip


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.integers(0, 1000))
def test_requests_assembled_at_random_read_as_h11_reads_them(
    pieces: list[bytes], seed: int
) -> None:
    assert_same(b"".join(pieces), seed)


LINES = [b"GET / HTTP/1.1", b"POST /p HTTP/1.1", b"GET / HTTP/1.0", b"PUT /?q HTTP/1.1"]
FIELDS = [
    b"Host: a.example", b"Content-Length: 3", b"Content-Length: 0", b"Content-Length: 3, 3",
    b"Content-Length: 007", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
    b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue",
    b"Connection: upgrade", b"Upgrade: websocket", b"X-A: b", b" folded", b"X-C: \x01",
]  # fmt: skip
BODIES = [b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"0\r\nX: y\r\n\r\n", b"2\r\nab\r\n", b"abcdef"]

request = st.builds(
    lambda line, fields, body: (
        line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    ),
    st.sampled_from(LINES),
    st.lists(st.sampled_from(FIELDS), max_size=5),
    st.sampled_from(BODIES),
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(request, min_size=1, max_size=3), st.integers(0, 1000))
def test_pipelined_requests_at_random_read_as_h11_reads_them(
    requests: list[bytes], seed: int
) -> None:
    assert_same(b"".join(requests), seed)
