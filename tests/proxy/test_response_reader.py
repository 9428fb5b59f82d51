"""The backend-response reader, fed bytes directly (it does no I/O)."""

from __future__ import annotations

import pytest

from drone.proxy.response_reader import ResponseError, ResponseReader, State

Headers = list[tuple[bytes, bytes]]


class Recorder:
    def __init__(self) -> None:
        self.heads: list[tuple[int, bytes, Headers]] = []
        self.switches: list[Headers] = []
        self.sized: list[bool] = []
        self.body = b""
        self.ends = 0
        self.pause_after_data = False
        self.reader: ResponseReader | None = None
        self.reusable_at_end: list[bool] = []
        self.rest_at_switch: list[bytes] = []

    def on_head(self, status: int, reason: bytes, headers: Headers, sized: bool) -> None:
        self.heads.append((status, reason, headers))
        self.sized.append(sized)

    def on_switch(self, headers: Headers) -> None:
        self.switches.append(headers)
        assert self.reader is not None
        self.rest_at_switch.append(self.reader.rest())

    def on_data(self, data: bytes) -> None:
        self.body += data
        if self.pause_after_data and self.reader is not None:
            self.reader.paused = True

    def on_end(self) -> None:
        self.ends += 1
        assert self.reader is not None
        self.reusable_at_end.append(self.reader.reusable)


def read(
    data: bytes, *, head_only: bool = False, upgrade: bool = False, step: int = 0
) -> tuple[Recorder, ResponseReader]:
    sink = Recorder()
    reader = ResponseReader(sink, 64 * 1024)
    sink.reader = reader
    reader.start(head_only, upgrade)
    if step:
        for start in range(0, len(data), step):
            reader.feed(data[start : start + step])
    else:
        reader.feed(data)
    return sink, reader


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\nB\r\nworld, said\r\n0\r\nTrailer: x\r\n\r\n"
)


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7, 64])
def test_chunked_body_split_anywhere(step: int) -> None:
    sink, reader = read(CHUNKED, step=step)
    assert sink.heads == [(200, b"OK", [(b"X-A", b"1")])]
    assert sink.sized == [False]
    assert sink.body == b"hello world, said"
    assert sink.ends == 1
    assert reader.reusable


@pytest.mark.parametrize("step", [0, 1, 5])
def test_content_length_body(step: int) -> None:
    sink, reader = read(
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc", step=step
    )
    assert sink.heads == [(201, b"Created", [(b"Content-Length", b"3")])]
    assert sink.sized == [True]
    assert sink.body == b"abc"
    assert sink.ends == 1
    assert reader.reusable


def test_bodies_that_are_empty_by_rule() -> None:
    for response, head_only in (
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    ):
        sink, reader = read(response, head_only=head_only)
        assert sink.ends == 1 and sink.body == b""
        assert reader.reusable


def test_unframed_body_ends_with_the_socket() -> None:
    sink, reader = read(b"HTTP/1.0 200 OK\r\n\r\nsome")
    assert sink.sized == [False]
    reader.feed(b" more")
    assert sink.ends == 0
    reader.feed_eof()
    assert sink.body == b"some more"
    assert sink.ends == 1
    assert not reader.reusable


def test_connection_close_and_named_headers() -> None:
    sink, reader = read(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"
    )
    assert sink.heads[0][2] == [(b"Content-Length", b"0")]
    assert not reader.reusable


def test_interim_responses_are_skipped_and_101_switches() -> None:
    sink, _ = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert [h[0] for h in sink.heads] == [200]
    assert sink.body == b"x"
    sink, reader = read(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi",
        upgrade=True,
    )
    assert sink.switches == [
        [(b"Sec-WebSocket-Accept", b"abc"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    ]
    assert reader.state is State.SWITCHED
    assert sink.rest_at_switch == [b"\x81\x02hi"]  # already there when the sink heard


@pytest.mark.parametrize("step", [0, 1])
def test_bytes_after_a_bodiless_response_make_the_socket_unusable(step: int) -> None:
    sink, _ = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", head_only=True, step=step)
    assert sink.ends == 1
    assert sink.reusable_at_end == [step == 1]  # fed byte by byte, the extra bytes came later
    sink, _ = read(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert sink.reusable_at_end == [True]


def test_both_framings_use_chunked_and_forbid_reuse() -> None:
    sink, reader = read(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nz\r\n0\r\n\r\n"
    )
    assert sink.body == b"z"
    assert sink.heads[0][2] == []
    assert sink.sized == [False]  # the Content-Length went with the chunked framing
    assert not reader.reusable


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 O\nK\r\n\r\n",
        b"HTTP/1.1 099 OK\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bare-Cr: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Esc: \x1b[31m\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_garbage_is_an_error(response: bytes) -> None:
    with pytest.raises(ResponseError):
        read(response)


def test_early_close_is_an_error() -> None:
    _, reader = read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ResponseError):
        reader.feed_eof()
    _, reader = read(b"")
    with pytest.raises(ResponseError):
        reader.feed_eof()


def test_head_size_limit() -> None:
    sink = Recorder()
    reader = ResponseReader(sink, 1024)
    reader.start(False, False)
    with pytest.raises(ResponseError):
        reader.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 2000)


def test_pausing_holds_data_until_resumed() -> None:
    sink = Recorder()
    reader = ResponseReader(sink, 64 * 1024)
    sink.reader = reader
    sink.pause_after_data = True
    reader.start(False, False)
    reader.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
    )
    assert sink.body == b"abc"
    for expected in (b"abcdef", b"abcdef"):
        reader.paused = False
        reader.run()
        assert sink.body == expected
    reader.paused = False
    reader.run()
    assert sink.ends == 1
