"""Bearer tokens through the proxy: every case with its exact status."""

from __future__ import annotations

import pytest

from tests.proxy.conftest import Proxy, StartBackend, raw_request

TOKEN = "s3cret-Token_42"


@pytest.fixture
async def guarded(proxy: Proxy, start_backend: StartBackend) -> str:
    found = await start_backend()
    proxy.routes.set_ready(found.id, found.ip, found.port, TOKEN)
    return found.id


async def test_token_cases(proxy: Proxy, guarded: str) -> None:
    host = proxy.host(guarded)
    async with proxy.client() as client:

        async def status(path: str = "/", **headers: str) -> int:
            response = await client.get(path, headers={"Host": host, **headers})
            return response.status_code

        assert await status() == 401
        assert await status(Authorization=f"Bearer {TOKEN}") == 200
        assert await status(Authorization=f"bearer   {TOKEN}") == 200
        assert await status(Authorization="Bearer wrong") == 403
        assert await status(Authorization="Bearer") == 403
        assert await status(Authorization="Basic dXNlcjpwYXNz") == 401
        assert await status(Cookie=f"_plane_auth={TOKEN}") == 200
        assert await status(Cookie=f"theme=dark; _plane_auth={TOKEN}; lang=en") == 200
        assert await status(Cookie="_plane_auth=wrong") == 403
        assert await status(Cookie="theme=dark") == 401
        assert await status(Cookie=";;;=;_plane_auth;=x") == 401
        assert await status(Cookie="_plane_auth=") == 403
        # one right credential among wrong ones is enough
        assert await status(Authorization="Bearer wrong", Cookie=f"_plane_auth={TOKEN}") == 200


async def test_malformed_credentials_get_4xx_never_a_crash(proxy: Proxy, guarded: str) -> None:
    host = proxy.host(guarded).encode()
    for header in (
        b"Authorization: Bearer \xff\xfe\r\n",
        b"Authorization: \r\n",
        b"Cookie: _plane_auth=\xc3\x28\r\n",
        b"Cookie: \r\n",
        b"Authorization: Bearer " + b"A" * 5000 + b"\r\n",
    ):
        answer = await raw_request(
            proxy.port,
            b"GET / HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (host, header),
        )
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, (header, answer[:80])
    async with proxy.client() as client:
        ok = await client.get(
            "/", headers={"Host": host.decode(), "Authorization": f"Bearer {TOKEN}"}
        )
    assert ok.status_code == 200


async def test_auth_endpoint_sets_the_cookie_and_redirects(proxy: Proxy, guarded: str) -> None:
    host = proxy.host(guarded)
    async with proxy.client() as client:
        response = await client.get(
            "/_plane_auth",
            params={"token": TOKEN, "redirect": "/app/page?x=1"},
            headers={"Host": host},
        )
        assert response.status_code == 302
        assert response.headers["location"] == "/app/page?x=1"
        assert response.headers["set-cookie"] == (
            f"_plane_auth={TOKEN}; Path=/; HttpOnly; SameSite=Lax"
        )
        default = await client.get("/_plane_auth", params={"token": TOKEN}, headers={"Host": host})
        assert default.status_code == 302
        assert default.headers["location"] == "/"
        # the cookie it set lets the browser in
        follow = await client.get("/", headers={"Host": host, "Cookie": f"_plane_auth={TOKEN}"})
        assert follow.status_code == 200
        for redirect in ("//evil.example/", "https://evil.example/", "evil", "/\\evil.example"):
            bad = await client.get(
                "/_plane_auth",
                params={"token": TOKEN, "redirect": redirect},
                headers={"Host": host},
            )
            assert bad.status_code == 400, redirect
            assert "set-cookie" not in bad.headers
        wrong = await client.get("/_plane_auth", params={"token": "nope"}, headers={"Host": host})
        assert wrong.status_code == 403
        assert "set-cookie" not in wrong.headers


async def test_the_token_never_reaches_the_backend(proxy: Proxy, guarded: str) -> None:
    host = proxy.host(guarded)
    async with proxy.client() as client:
        by_cookie = await client.get(
            "/headers", headers={"Host": host, "Cookie": f"a=1; _plane_auth={TOKEN}; b=2"}
        )
        by_bearer = await client.get(
            "/headers", headers={"Host": host, "Authorization": f"Bearer {TOKEN}"}
        )
    assert by_cookie.status_code == by_bearer.status_code == 200
    for seen in (by_cookie.text, by_bearer.text):
        assert TOKEN not in seen
        assert "_plane_auth" not in seen
    assert "a=1; b=2" in by_cookie.text
    assert "authorization" not in by_bearer.text.lower()
