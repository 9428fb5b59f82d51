"""The proxy's own answers, built once.

A body says in one line what went wrong, so a person reading it in a browser
or in curl knows whether the proxy or the backend answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Canned:
    status: int
    headers: Headers
    body: bytes

    @property
    def reason(self) -> bytes:
        return HTTPStatus(self.status).phrase.encode("ascii")


def make(status: int, text: str, extra: Headers = ()) -> Canned:
    body = f"{text}\n".encode()
    headers: Headers = (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        *extra,
    )
    return Canned(status, headers, body)


BAD_REQUEST = make(400, "400 Bad Request: malformed HTTP request")
DUPLICATE_HOST = make(400, "400 Bad Request: more than one Host header")
CONTROL_CHARACTER = make(400, "400 Bad Request: a control character in a header value")
CHUNKED_HTTP10 = make(400, "400 Bad Request: Transfer-Encoding in an HTTP/1.0 request")
AMBIGUOUS_LENGTH = make(400, "400 Bad Request: both Content-Length and Transfer-Encoding given")
MISSING_TOKEN = make(
    401,
    "401 Unauthorized: this backend needs a bearer token",
    ((b"www-authenticate", b'Bearer realm="plane"'),),
)
WRONG_TOKEN = make(403, "403 Forbidden: wrong bearer token")
NOT_FOUND = make(404, "404 Not Found: no backend at this host")
METHOD_NOT_ALLOWED = make(405, "405 Method Not Allowed: CONNECT is not proxied")
REQUEST_TIMEOUT = make(408, "408 Request Timeout: the request head was not received in time")
TOO_LARGE = make(413, "413 Content Too Large: the request body exceeds the limit")
HEAD_TOO_LARGE = make(431, "431 Request Header Fields Too Large")
NOT_IMPLEMENTED = make(501, "501 Not Implemented: unsupported Transfer-Encoding")
BAD_GATEWAY = make(502, "502 Bad Gateway: the backend refused, reset or garbled the connection")
GATEWAY_TIMEOUT = make(504, "504 Gateway Timeout: the backend did not answer in time")


def not_ready(retry_after_secs: int) -> Canned:
    return make(
        503,
        "503 Service Unavailable: the backend is not ready yet",
        ((b"retry-after", str(retry_after_secs).encode("ascii")),),
    )


# What h11's error_status_hint maps to.
BY_HINT = {400: BAD_REQUEST, 431: HEAD_TOO_LARGE, 501: NOT_IMPLEMENTED}


def redirect(location: bytes, set_cookie: bytes) -> Canned:
    headers: Headers = (
        (b"location", location),
        (b"set-cookie", set_cookie),
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
    )
    return Canned(302, headers, b"")
