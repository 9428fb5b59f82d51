"""The request path without sockets or Docker: browser socket, exchange and backend
socket driven through in-memory transports (`tests.proxy.memory`)."""

from __future__ import annotations

import asyncio

import pytest

from tests.proxy.memory import Bed, responses, until

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture
async def bed() -> Bed:
    return Bed(asyncio.get_running_loop(), hold_until_ready_secs=0.5)


def get(host: bytes, path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


async def test_pipelined_requests_are_answered_in_order_on_one_backend_socket(bed: Bed) -> None:
    host = bed.route("b1")
    browser, backend = await bed.ask(get(host, b"/one") + get(host, b"/two"))
    assert backend.received().startswith(b"GET /one HTTP/1.1\r\n")
    backend.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none")
    await until(lambda: b"GET /two" in bytes(backend.transport.written))
    backend.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo")
    await until(lambda: browser.transport.written.endswith(b"two"))
    out = browser.received()
    assert responses(out) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    assert out.index(b"one") < out.index(b"two")
    assert len(bed.backends) == 1, "the second request reused the pooled socket"
    assert bed.activity.active("b1") == 0


@pytest.mark.parametrize(
    ("settings", "request_bytes", "status"),
    [
        # a body over the limit, before any of it is read
        ({"max_body_bytes": 10}, b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 11\r\n\r\n", 413),
        # a head over the limit
        ({"max_head_bytes": 1024}, b"GET / HTTP/1.1\r\nHost: %s\r\nX-Big: " + b"a" * 2000, 431),
        # a head not finished in time (no blank line, ever)
        ({"head_timeout_secs": 0.05}, b"GET / HTTP/1.1\r\nHost: %s\r\n", 408),
    ],
    ids=["413", "431", "408"],
)  # fmt: skip
async def test_requests_refused_by_the_proxy_reach_no_backend(
    settings: dict[str, float], request_bytes: bytes, status: int
) -> None:
    bed = Bed(asyncio.get_running_loop(), **settings)
    browser = bed.browser()
    browser.send(request_bytes % bed.route("b1"))
    await until(lambda: bool(browser.transport.written))
    assert browser.received().startswith(b"HTTP/1.1 %d " % status)
    assert bed.backends == []


async def test_502_when_the_backend_closes_before_answering(bed: Bed) -> None:
    browser, backend = await bed.ask(get(bed.route("b1")))
    backend.end()
    await until(lambda: bool(browser.transport.written))
    assert browser.received().startswith(b"HTTP/1.1 502 ")
    assert not browser.transport.closed, "the browser's socket stays usable"
    assert bed.activity.active("b1") == 0


async def test_502_when_the_backend_cannot_be_reached(bed: Bed) -> None:
    host = bed.route("b1")
    bed.refuse = True
    browser = bed.browser()
    browser.send(get(host))
    await until(lambda: bool(browser.transport.written))
    assert browser.received().startswith(b"HTTP/1.1 502 ")


async def test_a_backend_that_dies_after_the_head_cuts_the_browser_off(bed: Bed) -> None:
    browser, backend = await bed.ask(get(bed.route("b1")))
    backend.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
    await until(lambda: browser.transport.written.endswith(b"half"))
    backend.end()
    await until(lambda: browser.transport.aborted)
    assert responses(browser.received()) == [b"HTTP/1.1 200 OK"], "no second answer"


async def test_504_when_the_backend_is_silent() -> None:
    bed = Bed(asyncio.get_running_loop(), upstream_response_timeout_secs=0.05)
    host = bed.route("b1")
    browser = bed.browser()
    browser.send(get(host))
    await bed.backend()
    await until(lambda: bool(browser.transport.written))
    assert browser.received().startswith(b"HTTP/1.1 504 ")


async def test_404_for_a_host_that_names_no_backend(bed: Bed) -> None:
    browser = bed.browser()
    browser.send(get(b"nobody.plane.test"))
    await until(lambda: bool(browser.transport.written))
    assert browser.received().startswith(b"HTTP/1.1 404 ")


async def test_an_accepted_upgrade_becomes_a_tunnel_both_ways(bed: Bed) -> None:
    browser, backend = await bed.ask(
        get(bed.route("b1"), b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    )
    head = backend.received()
    assert b"upgrade: websocket" in head.lower()
    backend.answer(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
    backend.answer(b"Upgrade: websocket\r\n\r\nfrom-backend")
    await until(lambda: browser.transport.written.endswith(b"from-backend"))
    assert browser.received().startswith(b"HTTP/1.1 101 ")
    browser.send(b"from-browser")
    assert backend.received() == b"from-browser"
    assert bed.activity.active("b1") == 1, "an open tunnel keeps the backend busy"
    backend.end()
    await until(lambda: bed.activity.active("b1") == 0)


async def test_a_declined_upgrade_is_an_ordinary_response(bed: Bed) -> None:
    browser, backend = await bed.ask(
        get(bed.route("b1"), b"/ws", b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    )
    backend.answer(OK)
    await until(lambda: browser.transport.written.endswith(b"ok"))
    assert browser.received().startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
    ],
)
async def test_responses_without_a_body_send_none(bed: Bed, method: bytes, answer: bytes) -> None:
    host = bed.route("b1")
    browser = bed.browser()
    browser.send(method + b" / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" + get(host, b"/next"))
    backend = await bed.backend()
    backend.answer(answer)
    await until(lambda: b"GET /next" in bytes(backend.transport.written))
    backend.answer(OK)
    await until(lambda: browser.transport.written.endswith(b"ok"))
    out = browser.received()
    _, _, rest = out.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200 "), "nothing between the first head and the next"


async def test_a_close_delimited_body_is_rechunked_for_the_browser(bed: Bed) -> None:
    browser, backend = await bed.ask(get(bed.route("b1")))
    backend.answer(b"HTTP/1.1 200 OK\r\n\r\nstreamed")
    backend.end()
    await until(lambda: browser.transport.written.endswith(b"0\r\n\r\n"))
    out = browser.received()
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"8\r\nstreamed\r\n0\r\n\r\n")
    assert not browser.transport.closed, "the browser's socket is kept alive"


async def test_a_full_browser_stops_the_reading_of_the_backend(bed: Bed) -> None:
    browser, backend = await bed.ask(get(bed.route("b1")))
    backend.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nabcd")
    await until(lambda: browser.transport.written.endswith(b"abcd"))
    browser.full(True)
    assert not backend.transport.reading
    browser.full(False)
    assert backend.transport.reading
    backend.answer(b"efgh")
    await until(lambda: browser.transport.written.endswith(b"efgh"))


async def test_a_full_backend_stops_the_reading_of_the_browser(bed: Bed) -> None:
    host = bed.route("b1")
    browser = bed.browser()
    browser.send(b"POST / HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 8\r\n\r\nabcd")
    backend = await bed.backend()
    await until(lambda: backend.transport.written.endswith(b"abcd"))
    backend.protocol.pause_writing()
    assert not browser.transport.reading
    backend.protocol.resume_writing()
    assert browser.transport.reading
    browser.send(b"efgh")
    assert backend.received().endswith(b"abcdefgh")
    backend.answer(OK)
    await until(lambda: browser.transport.written.endswith(b"ok"))


async def test_a_request_waits_for_its_backend_to_become_ready(bed: Bed) -> None:
    bed.routes.set_pending("b1")  # scheduled, not Ready yet
    bed.activity.track("b1")
    browser = bed.browser()
    browser.send(get(b"b1.plane.test"))
    await asyncio.sleep(0)
    assert bed.backends == [], "held, not sent"
    bed.routes.set_ready("b1", "10.0.0.2", 8080, None)
    backend = await bed.backend()
    backend.answer(OK)
    await until(lambda: browser.transport.written.endswith(b"ok"))


async def test_a_request_pipelined_after_a_refused_one_is_served(bed: Bed) -> None:
    host = bed.route("b1")
    browser = bed.browser()
    browser.send(get(b"nobody.plane.test") + get(host, b"/after"))
    backend = await bed.backend()
    assert backend.received().startswith(b"GET /after HTTP/1.1\r\n")
    backend.answer(OK)
    await until(lambda: browser.transport.written.endswith(b"ok"))
    assert [s[:12] for s in responses(browser.received())] == [b"HTTP/1.1 404", b"HTTP/1.1 200"]
