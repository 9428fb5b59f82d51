"""The rules for response heads and body framing toward the browser."""

from __future__ import annotations

import pytest

from drone.proxy import answers, chunked, response_writer
from drone.proxy.response_writer import Body, Peer

GET11 = Peer(head_request=False, http10=False, keep_alive=True)
HEAD11 = Peer(head_request=True, http10=False, keep_alive=True)
GET10 = Peer(head_request=False, http10=True, keep_alive=False)
CLOSING = Peer(head_request=False, http10=False, keep_alive=False)
LENGTH = [(b"Content-Length", b"5")]


@pytest.mark.parametrize(
    ("status", "sized", "peer", "body", "chunked"),
    [
        (200, True, GET11, Body.AS_IS, False),
        (200, False, GET11, Body.CHUNKED, True),
        (200, False, GET10, Body.UNTIL_CLOSE, False),
        (200, True, GET10, Body.AS_IS, False),
        (200, True, HEAD11, Body.NONE, False),
        (200, False, HEAD11, Body.NONE, True),  # the head a GET would have got
        (204, False, GET11, Body.NONE, False),
        (304, False, GET10, Body.NONE, False),
        (101, False, GET11, Body.NONE, False),
    ],
)
def test_body_framing(status: int, sized: bool, peer: Peer, body: Body, chunked: bool) -> None:
    assert response_writer.body_for(status, sized, peer) == (body, chunked)


def test_head_keeps_names_order_and_reason() -> None:
    headers = [(b"X-Custom", b"a b"), (b"Content-Length", b"5"), (b"set-cookie", b"c=1")]
    head, body, close = response_writer.response_head(201, b"Made It", headers, True, GET11, False)
    assert head == (
        b"HTTP/1.1 201 Made It\r\nX-Custom: a b\r\nContent-Length: 5\r\nset-cookie: c=1\r\n\r\n"
    )
    assert (body, close) == (Body.AS_IS, False)


@pytest.mark.parametrize(
    ("peer", "forced", "headers", "closes"),
    [
        (GET11, False, LENGTH, False),
        (GET11, True, LENGTH, True),  # the proxy's own reason, e.g. stopping
        (CLOSING, False, LENGTH, True),  # the browser said Connection: close
        (GET10, False, LENGTH, True),
        (GET10, False, [], True),  # and the close is what ends the body
    ],
)
def test_when_the_socket_closes_the_head_says_so(
    peer: Peer, forced: bool, headers: list[tuple[bytes, bytes]], closes: bool
) -> None:
    head, _, close = response_writer.response_head(200, b"OK", headers, bool(headers), peer, forced)
    assert close is closes
    assert head.endswith(b"connection: close\r\n\r\n") is closes


def test_unknown_length_gets_a_chunked_header_for_http11_only() -> None:
    head, _, _ = response_writer.response_head(200, b"OK", [], False, GET11, False)
    assert b"transfer-encoding: chunked\r\n" in head
    head, _, _ = response_writer.response_head(200, b"OK", [], False, GET10, False)
    assert b"transfer-encoding" not in head


def test_chunks() -> None:
    assert b"".join(chunked.chunk(b"x" * 26)) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert chunked.chunk(b"") == []  # an empty chunk would end the body
    assert chunked.LAST_CHUNK == b"0\r\n\r\n"


def test_switching_head() -> None:
    head = response_writer.switching_head([(b"connection", b"upgrade"), (b"upgrade", b"websocket")])
    assert head == (
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )


def test_canned_answers_have_a_reason_and_no_body_for_head() -> None:
    data, close = response_writer.canned_response(answers.NOT_FOUND, GET11, False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert body == answers.NOT_FOUND.body
    assert not close
    data, close = response_writer.canned_response(answers.NOT_FOUND, HEAD11, False)
    assert data == head + b"\r\n\r\n"
    data, close = response_writer.canned_response(
        answers.REQUEST_TIMEOUT, response_writer.NO_REQUEST, False
    )
    assert close and b"connection: close\r\n" in data
