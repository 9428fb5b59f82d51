"""Bearer tokens: who may reach a backend that has one, and the cookie endpoint.

Pure functions over bytes; the comparison is constant-time over every
credential offered so timing says nothing about which one was close.
"""

from __future__ import annotations

import enum
import hmac
import urllib.parse
from dataclasses import dataclass

from drone.proxy.headers import AUTH_COOKIE

AUTH_PATH = b"/_plane_auth"


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    MISSING = "missing"  # no credential at all → 401
    WRONG = "wrong"  # credentials, none of them right → 403


def check(token: bytes, offered: list[bytes]) -> Verdict:
    if not offered:
        return Verdict.MISSING
    ok = False
    for candidate in offered:
        ok |= hmac.compare_digest(candidate, token)
    return Verdict.ALLOWED if ok else Verdict.WRONG


def matches(token: bytes, candidate: bytes) -> bool:
    return hmac.compare_digest(candidate, token)


@dataclass(frozen=True, slots=True)
class AuthAnswer:
    """What to answer on `/_plane_auth`: a status and, on success, the redirect and cookie."""

    status: int
    location: bytes = b""
    set_cookie: bytes = b""
    reason: str = ""


# Characters a cookie value may hold unquoted (RFC 6265 cookie-octet).
_COOKIE_OCTETS = frozenset(
    [0x21, *range(0x23, 0x2C), *range(0x2D, 0x3B), *range(0x3C, 0x5C), *range(0x5D, 0x7F)]
)
# What stays literal when the redirect path is put back into a Location header.
_LOCATION_SAFE = "/?#&=;:@!$'()*+,~-._%"


def is_auth_target(target: bytes) -> bool:
    return target == AUTH_PATH or target.startswith(AUTH_PATH + b"?")


def auth_endpoint(target: bytes, token: bytes, secure: bool) -> AuthAnswer:
    """Answer `GET /_plane_auth?token=...&redirect=/path` for a backend whose token is `token`."""
    _, _, query = target.partition(b"?")
    try:
        pairs = urllib.parse.parse_qsl(
            query.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=16,
        )
    except (UnicodeDecodeError, ValueError):
        return AuthAnswer(400, reason="the query string is malformed")
    given: dict[str, str] = {}
    for key, value in pairs:
        if key in given and key in ("token", "redirect"):
            return AuthAnswer(400, reason=f"{key} is given twice")
        given[key] = value
    if "token" not in given:
        return AuthAnswer(400, reason="token is missing")
    redirect = given.get("redirect", "/")
    if not is_safe_redirect(redirect):
        return AuthAnswer(400, reason="redirect must be a path starting with a single /")
    offered = given["token"].encode("utf-8")
    if not matches(token, offered):
        return AuthAnswer(403, reason="wrong token")
    if not token or any(byte not in _COOKIE_OCTETS for byte in token):
        return AuthAnswer(400, reason="this token cannot be stored in a cookie")
    cookie = AUTH_COOKIE + b"=" + token + b"; Path=/; HttpOnly; SameSite=Lax"
    if secure:
        cookie += b"; Secure"
    location = urllib.parse.quote(redirect, safe=_LOCATION_SAFE).encode("ascii")
    return AuthAnswer(302, location=location, set_cookie=cookie)


def is_safe_redirect(path: str) -> bool:
    """A local path: one leading `/`, and nothing a browser could read as another host."""
    if not path.startswith("/") or path.startswith(("//", "/\\")):
        return False
    return "\\" not in path and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
