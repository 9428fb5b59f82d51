"""What the proxy forwards is what both it and the backend parse the same way.

Refused: control characters in header values (h11 lets some through) and
Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1). Normalised: Content-Length is
sent as the number it is. Ignored: Upgrade without the `upgrade` connection
option, and Upgrade in HTTP/1.0 (RFC 9110 7.8). HTTP/1.0 requests go on as
HTTP/1.1, the proxy's own version (RFC 9110 2.5). A backend in the test records
every head it is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drone.proxy.headers import request_head, scan_request
from tests.proxy.conftest import Proxy, raw_request

CLOSE = b"Connection: close\r\n"  # raw_request reads until the proxy closes
CONTROLS = [*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F]


class Recorder:
    """A backend that keeps each request head and answers 200 `ok`, then closes."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


@pytest.fixture
async def recorder(proxy: Proxy) -> AsyncIterator[Recorder]:
    found = Recorder()
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    proxy.routes.set_ready("rec", "127.0.0.1", server.sockets[0].getsockname()[1], None)
    yield found
    server.close()


def head_lines(head: bytes) -> list[bytes]:
    return [line.lower() for line in head.split(b"\r\n")]


async def forwarded(proxy: Proxy, recorder: Recorder, request: bytes) -> list[bytes]:
    """Send `request` (its `%s` the recorder's host), see it answered by the backend,
    and return the lines of the one head the backend got."""
    answer = await raw_request(proxy.port, request % proxy.host("rec").encode())
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok"), answer
    (head,) = recorder.heads
    return head_lines(head)


@pytest.mark.parametrize("byte", CONTROLS)
def test_control_characters_in_values_are_found(byte: int) -> None:
    scan = scan_request([(b"Host", b"a.plane.test"), (b"X-Note", b"a" + bytes([byte]) + b"b")])
    assert scan.control_character


def test_tabs_and_obs_text_are_not_control_characters() -> None:
    scan = scan_request([(b"Host", b"a.plane.test"), (b"X-Note", b"a\tb \xe9")])
    assert not scan.control_character


def test_content_length_goes_on_as_its_number() -> None:
    scan = scan_request([(b"Host", b"a.plane.test"), (b"Content-Length", b"007")])
    head = request_head(b"POST", b"/", scan, b"192.0.2.1", b"x-forwarded-proto: http\r\n", True)
    assert b"content-length: 7" in head_lines(head)
    assert b"007" not in head


def test_upgrade_without_the_connection_option_is_no_upgrade() -> None:
    scan = scan_request([(b"Host", b"a.plane.test"), (b"Upgrade", b"websocket")])
    assert scan.upgrade is None
    head = request_head(b"GET", b"/", scan, b"192.0.2.1", b"x-forwarded-proto: http\r\n", True)
    assert not any(line.startswith(b"upgrade") for line in head_lines(head))


async def test_a_control_character_gets_400_and_reaches_no_backend(
    proxy: Proxy, recorder: Recorder
) -> None:
    host = proxy.host("rec").encode()
    for byte in CONTROLS:
        request = b"GET / HTTP/1.1\r\nHost: %s\r\nX-Note: a%sb\r\n\r\n" % (host, bytes([byte]))
        answer = await raw_request(proxy.port, request)
        assert answer.startswith(b"HTTP/1.1 400 "), (byte, answer)
        assert b"control character" in answer
    clean = await raw_request(proxy.port, b"GET / HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (host, CLOSE))
    assert clean.startswith(b"HTTP/1.1 200 ")
    assert len(recorder.heads) == 1, "only the clean request was forwarded"


async def test_chunked_http10_gets_400_and_reaches_no_backend(
    proxy: Proxy, recorder: Recorder
) -> None:
    request = b"POST / HTTP/1.0\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
    request += b"1\r\na\r\n0\r\n\r\n"
    answer = await raw_request(proxy.port, request % proxy.host("rec").encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"HTTP/1.0" in answer
    assert recorder.heads == []


async def test_http10_goes_on_as_http11_and_its_upgrade_is_ignored(
    proxy: Proxy, recorder: Recorder
) -> None:
    request = b"GET /chat HTTP/1.0\r\nHost: %s\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    lines = await forwarded(proxy, recorder, request)
    assert lines[0] == b"get /chat http/1.1"
    assert not any(line.startswith((b"upgrade", b"connection: upgrade")) for line in lines)


async def test_upgrade_without_connection_upgrade_is_an_ordinary_request(
    proxy: Proxy, recorder: Recorder
) -> None:
    request = b"GET /chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
    lines = await forwarded(proxy, recorder, request)
    assert not any(line.startswith(b"upgrade") for line in lines)


async def test_content_length_reaches_the_backend_as_its_number(
    proxy: Proxy, recorder: Recorder
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 003\r\nConnection: close\r\n\r\nabc"
    assert b"content-length: 3" in await forwarded(proxy, recorder, request)
