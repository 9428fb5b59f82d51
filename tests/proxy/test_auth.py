"""Token rules and the cookie endpoint, as pure functions."""

from __future__ import annotations

import pytest

from drone.proxy.auth import Verdict, auth_endpoint, check, is_auth_target, is_safe_redirect


def test_check() -> None:
    assert check(b"tok", []) is Verdict.MISSING
    assert check(b"tok", [b"nope"]) is Verdict.WRONG
    assert check(b"tok", [b"nope", b"tok"]) is Verdict.ALLOWED
    assert check(b"tok", [b""]) is Verdict.WRONG
    assert check(b"tok", [b"\xff\x00"]) is Verdict.WRONG


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/", True),
        ("/a/b?c=d#e", True),
        ("//evil.example", False),
        ("/\\evil.example", False),
        ("/a\\b", False),
        ("https://evil.example/", False),
        ("evil", False),
        ("", False),
        ("/a\r\nSet-Cookie: x=y", False),
    ],
)
def test_is_safe_redirect(path: str, ok: bool) -> None:
    assert is_safe_redirect(path) is ok


def test_auth_target() -> None:
    assert is_auth_target(b"/_plane_auth?token=x")
    assert is_auth_target(b"/_plane_auth")
    assert not is_auth_target(b"/_plane_authx")


def test_auth_endpoint() -> None:
    ok = auth_endpoint(b"/_plane_auth?token=tok&redirect=/app%3Fx%3D1", b"tok", secure=True)
    assert ok.status == 302
    assert ok.location == b"/app?x=1"
    assert ok.set_cookie == b"_plane_auth=tok; Path=/; HttpOnly; SameSite=Lax; Secure"
    default = auth_endpoint(b"/_plane_auth?token=tok", b"tok", secure=False)
    assert default.status == 302 and default.location == b"/"
    assert b"Secure" not in default.set_cookie
    assert auth_endpoint(b"/_plane_auth?token=bad", b"tok", False).status == 403
    assert auth_endpoint(b"/_plane_auth", b"tok", False).status == 400
    assert auth_endpoint(b"/_plane_auth?token=tok&redirect=//evil", b"tok", False).status == 400
    assert auth_endpoint(b"/_plane_auth?token=tok&redirect=/%0d%0a", b"tok", False).status == 400
    assert auth_endpoint(b"/_plane_auth?token=%ff", b"tok", False).status == 400
    assert auth_endpoint(b"/_plane_auth?token=a&token=tok", b"tok", False).status == 400
