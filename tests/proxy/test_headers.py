"""The pure head rules: Host → backend, what the backend and the browser see."""

from __future__ import annotations

import pytest

from drone.proxy.headers import (
    Framing,
    backend_from_host,
    cluster_domain,
    request_head,
    scan_request,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"abc.plane.test", "abc"),
        (b"ABC.Plane.Test", "abc"),
        (b"abc.plane.test:8443", "abc"),
        (b"abc.plane.test.", "abc"),
        (b"plane.test", None),
        (b".plane.test", None),
        (b"x.abc.plane.test", None),
        (b"abcplane.test", None),
        (b"abc.other.test", None),
        (b"abc.plane.test:port", None),
        (b"[::1]:8080", None),
        (b"\xffbc.plane.test", None),
    ],
)
def test_backend_from_host(host: bytes, expected: str | None) -> None:
    assert backend_from_host(host, b"plane.test") == expected


def test_cluster_domain_drops_the_port_and_case() -> None:
    assert cluster_domain("Plane.Test:9090") == b"plane.test"
    assert cluster_domain("localhost") == b"localhost"


def test_scan_sorts_headers() -> None:
    scan = scan_request(
        [
            (b"Host", b"abc.plane.test"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"hop"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Content-Length", b"12"),
            (b"Cookie", b"a=1; _plane_auth=tok; b=2"),
            (b"Authorization", b"Bearer tok"),
            (b"Authorization", b"Basic Zm9v"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"X-Forwarded-Proto", b"ftp"),
            (b"Expect", b"100-continue"),
            (b"Accept", b"*/*"),
        ]
    )
    assert scan.host == b"abc.plane.test"
    assert scan.framing is Framing.LENGTH
    assert scan.cookie_tokens == [b"tok"]
    assert [b[2] for b in scan.bearer] == [b"tok"]
    assert scan.expect_continue
    assert scan.forward == [
        (b"Content-Length", b"12"),
        (b"Cookie", b"a=1; b=2"),
        (b"Accept", b"*/*"),
    ]


def test_scan_drops_a_cookie_header_holding_only_the_token() -> None:
    scan = scan_request([(b"cookie", b'_plane_auth="tok"')])
    assert scan.cookie_tokens == [b"tok"]
    assert scan.forward == []


def test_request_head_sets_forwarding_headers_and_strips_matching_bearer() -> None:
    scan = scan_request(
        [
            (b"Host", b"abc.plane.test:8080"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
        ]
    )
    head = request_head(
        b"POST", b"/x?y=1", scan, b"192.0.2.9", b"x-forwarded-proto: https\r\n", False
    )
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /x?y=1 HTTP/1.1"
    assert b"host: abc.plane.test:8080" in lines
    assert b"x-forwarded-for: 10.0.0.1, 192.0.2.9" in lines
    assert b"x-forwarded-proto: https" in lines
    assert b"x-forwarded-host: abc.plane.test:8080" in lines
    assert b"transfer-encoding: chunked" in lines
    assert b"connection: upgrade" in lines and b"upgrade: websocket" in lines
    assert head.endswith(b"\r\n\r\n")
