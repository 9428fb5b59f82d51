"""Response heads and body framing toward the browser.

h11 parses what browsers send; what goes back is written here, because
building every response through h11's general event machinery cost more than
a third of the proxy's time per request. The rules are the ones HTTP/1.1 sets
for a server (RFC 9112 6 and 9.3), decided by pure functions:

- nothing follows the head of a response to HEAD, of a 1xx, 204 or 304;
- a Content-Length body is passed on as it comes;
- a body of unknown length is re-framed as chunked for an HTTP/1.1 browser,
  and for an HTTP/1.0 browser ends when the socket closes;
- the socket closes after the response when the browser asked for that, spoke
  HTTP/1.0, or the body has no other end; the head then says `Connection: close`.

Header names and values reach this module already checked: backends' by the
response reader, the proxy's own by `answers`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from drone.proxy.answers import Canned

_CLOSE_LINE = b"connection: close\r\n"
_CHUNKED_LINE = b"transfer-encoding: chunked\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Body(enum.Enum):
    """How the response body goes on the browser's socket."""

    NONE = "none"  # the head is the whole response
    AS_IS = "as-is"  # Content-Length: the bytes as they come
    CHUNKED = "chunked"  # each piece becomes one chunk
    UNTIL_CLOSE = "until-close"  # an HTTP/1.0 browser: closing ends the body


class Peer:
    """What the browser's request says about the response it can take."""

    __slots__ = ("head_request", "http10", "keep_alive")

    def __init__(self, head_request: bool, http10: bool, keep_alive: bool) -> None:
        self.head_request = head_request
        self.http10 = http10
        self.keep_alive = keep_alive


NO_REQUEST = Peer(head_request=False, http10=False, keep_alive=False)
_SWITCHING = Peer(head_request=False, http10=False, keep_alive=True)  # the socket lives on


def body_for(status: int, sized: bool, peer: Peer) -> tuple[Body, bool]:
    """The body framing for a final response (`sized`: its headers carry a
    Content-Length), and whether it needs a chunked header."""
    if status < 200 or status == 204 or status == 304:
        return Body.NONE, False
    if peer.head_request:
        # The head says what a GET would have got, but no body follows.
        return Body.NONE, not sized and not peer.http10
    if sized:
        return Body.AS_IS, False
    if peer.http10:
        return Body.UNTIL_CLOSE, False
    return Body.CHUNKED, True


def response_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    sized: bool,
    peer: Peer,
    close: bool,
) -> tuple[bytes, Body, bool]:
    """A response head: its bytes, its body framing, and whether the socket
    closes after it (`close` forces that)."""
    body, chunked = body_for(status, sized, peer)
    close = close or not peer.keep_alive or body is Body.UNTIL_CLOSE
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    if chunked:
        lines.append(_CHUNKED_LINE)
    if close:
        lines.append(_CLOSE_LINE)
    lines.append(b"\r\n")
    return b"".join(lines), body, close


def switching_head(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A 101 head; the headers carry the Connection and Upgrade the backend chose."""
    head, _, _ = response_head(101, b"Switching Protocols", headers, False, _SWITCHING, False)
    return head


def canned_response(canned: Canned, peer: Peer, close: bool) -> tuple[bytes, bool]:
    """One of the proxy's own answers, whole, and whether the socket closes after it."""
    sized = any(name == b"content-length" for name, _ in canned.headers)
    head, body, close = response_head(
        canned.status, canned.reason, canned.headers, sized, peer, close
    )
    if body is Body.NONE or not canned.body:
        return head, close
    return head + canned.body, close
