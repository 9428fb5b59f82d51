"""Pure decisions about HTTP heads: which backend a Host names, what the backend
and the browser get to see.

Everything here works on lowercase-comparable bytes tuples as h11 hands them
over, with no I/O, so the rules are tested without sockets. Header names are
forwarded with the case the peer used.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

AUTH_COOKIE = b"_plane_auth"

# Headers that describe one hop, never forwarded (RFC 9110 7.6.1), plus the
# ones the proxy rewrites itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_SPECIAL = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"authorization",
    b"cookie",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
# Control characters other than HTAB. h11 lets 0x01-0x08, 0x0e-0x1f and 0x7f through
# in header values, and backends differ on them (one of the ways requests are
# smuggled), so such a head is refused instead of forwarded (RFC 9110 5.5).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Connection tokens that name no header to remove.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})


class Framing(enum.Enum):
    """How a request body is delimited on the wire."""

    NONE = "none"
    LENGTH = "content-length"
    CHUNKED = "chunked"


def backend_from_host(host: bytes, domain: bytes) -> str | None:
    """The backend ID in `{backend_id}.{domain}[:port]`, or None when the host is not one.

    `domain` is the cluster name lowercased without its port: the port in the
    Host header is not compared, so a drone behind a port mapping still routes.
    """
    host = host.lower()
    if host.startswith(b"["):
        return None
    colon = host.rfind(b":")
    if colon != -1:
        if not host[colon + 1 :].isdigit():
            return None
        host = host[:colon]
    if host.endswith(b"."):
        host = host[:-1]
    cut = len(host) - len(domain) - 1
    if cut <= 0 or host[cut] != 0x2E or not host.endswith(domain):  # 0x2E is "."
        return None
    label = host[:cut]
    if b"." in label or not label.isascii():
        return None
    return label.decode("ascii")


def cluster_domain(cluster: str) -> bytes:
    """The cluster name as Host headers are compared against it."""
    name, _, port = cluster.rpartition(":")
    if not name or not port.isdigit():
        name = cluster
    return name.lower().rstrip(".").encode("ascii")


class RequestScan:
    """What the proxy needs from a browser's request head, gathered in one pass."""

    __slots__ = (
        "bearer",
        "chunked",
        "connection",
        "content_length",
        "control_character",
        "cookie_tokens",
        "duplicate_host",
        "expect_continue",
        "forward",
        "head_size",
        "host",
        "other_authorization",
        "upgrade",
        "xff",
    )

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.duplicate_host = False
        self.control_character = False
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.connection: list[bytes] = []
        self.expect_continue = False
        self.xff: bytes | None = None
        # Bearer credentials: (raw header name, whole value, token); kept out of
        # `forward` until the route's token is known.
        self.bearer: list[tuple[bytes, bytes, bytes]] = []
        self.other_authorization: list[tuple[bytes, bytes]] = []
        self.cookie_tokens: list[bytes] = []
        self.forward: list[tuple[bytes, bytes]] = []
        self.head_size = 0

    @property
    def framing(self) -> Framing:
        if self.chunked:
            return Framing.CHUNKED
        if self.content_length:
            return Framing.LENGTH
        return Framing.NONE


def scan_request(raw_headers: Iterable[tuple[bytes, bytes]]) -> RequestScan:
    """Sort a request's headers into what is forwarded and what the proxy acts on."""
    scan = RequestScan()
    forward = scan.forward
    size = 0
    control = _CONTROL.search
    for name, value in raw_headers:
        size += len(name) + len(value) + 4
        if control(value) is not None:
            scan.control_character = True
        lower = name.lower()
        if lower not in _REQUEST_SPECIAL:
            forward.append((name, value))
        elif lower == b"host":
            if scan.host is not None:
                scan.duplicate_host = True
            scan.host = value
        elif lower == b"content-length":
            scan.content_length = int(value)  # h11 has checked it is digits
            forward.append((name, b"%d" % scan.content_length))  # "007" goes on as "7"
        elif lower == b"transfer-encoding":
            scan.chunked = True  # h11 accepts nothing but chunked
        elif lower == b"cookie":
            if AUTH_COOKIE in value:
                value = _take_auth_cookies(value, scan.cookie_tokens)
                if not value:
                    continue
            forward.append((name, value))
        elif lower == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                scan.bearer.append((name, value, token.strip(b" \t")))
            else:
                scan.other_authorization.append((name, value))
        elif lower == b"upgrade":
            scan.upgrade = value
        elif lower == b"connection":
            scan.connection.extend(t.strip(b" \t").lower() for t in value.split(b","))
        elif lower == b"expect":
            scan.expect_continue = value.lower() == b"100-continue"
        elif lower == b"x-forwarded-for":
            scan.xff = value if scan.xff is None else scan.xff + b", " + value
        # the other hop-by-hop and X-Forwarded-Proto/-Host are dropped or rewritten
    scan.head_size = size
    if scan.upgrade is not None and b"upgrade" not in scan.connection:
        # Upgrade without the "upgrade" connection option asks for nothing (RFC 9110
        # 7.8): an ordinary request, and the header, hop-by-hop, goes no further.
        scan.upgrade = None
    if scan.connection:
        named = {t for t in scan.connection if t and t not in _CONNECTION_OPTIONS}
        if named:
            scan.forward = [(n, v) for n, v in forward if n.lower() not in named]
    return scan


def _take_auth_cookies(header: bytes, tokens: list[bytes]) -> bytes:
    """Remove `_plane_auth` pairs from a Cookie header, collecting their values."""
    kept = []
    for piece in header.split(b";"):
        pair = piece.strip(b" \t")
        name, eq, value = pair.partition(b"=")
        if eq and name.strip(b" \t") == AUTH_COOKIE:
            value = value.strip(b" \t")
            if len(value) >= 2 and value[0] == value[-1] == 0x22:  # a quoted value
                value = value[1:-1]
            tokens.append(value)
        elif pair:
            kept.append(pair)
    return b"; ".join(kept)


def request_head(
    method: bytes,
    target: bytes,
    scan: RequestScan,
    client_ip: bytes,
    proto_line: bytes,
    keep_bearer: bool,
) -> bytes:
    """The request head sent to the backend.

    Host is kept as the browser sent it; X-Forwarded-For gets the browser's
    address appended, X-Forwarded-Proto and X-Forwarded-Host are replaced.
    `proto_line` is the prebuilt X-Forwarded-Proto line.
    """
    host = scan.host or b""
    lines = [method + b" " + target + b" HTTP/1.1\r\nhost: " + host + b"\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in scan.forward]
    if keep_bearer:
        lines += [name + b": " + value + b"\r\n" for name, value, _ in scan.bearer]
    lines += [name + b": " + value + b"\r\n" for name, value in scan.other_authorization]
    if scan.chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    if scan.upgrade is not None:
        lines.append(b"connection: upgrade\r\nupgrade: " + scan.upgrade + b"\r\n")
    xff = client_ip if scan.xff is None else scan.xff + b", " + client_ip
    lines.append(b"x-forwarded-for: " + xff + b"\r\n")
    lines.append(proto_line)
    lines.append(b"x-forwarded-host: " + host + b"\r\n\r\n")
    return b"".join(lines)
