"""HTTPS: serving, ALPN, a certificate swapped on disk, and the HTTP → HTTPS redirect."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from shared.config import ConfigError
from tests.proxy.conftest import CLUSTER, MakeProxy, Proxy, StartBackend, raw_request, read_response


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for *.plane.test, made with the openssl CLI."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    result = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={name}.{CLUSTER}",
            "-addext", f"subjectAltName=DNS:*.{CLUSTER},DNS:{CLUSTER}",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"openssl failed: {result.stderr}"
    return cert, key


class LiveCertificates:
    """Two certificates, the old one in the files the proxy serves until `swap()`."""

    def __init__(self, directory: Path) -> None:
        self.old_cert, self.old_key = make_certificate(directory, "old")
        self.new_cert, self.new_key = make_certificate(directory, "new")
        self.live_cert, self.live_key = directory / "live.crt", directory / "live.key"
        self.live_cert.write_bytes(self.old_cert.read_bytes())
        self.live_key.write_bytes(self.old_key.read_bytes())

    def swap(self) -> None:
        """Replace both files by rename, as certificate tools do."""
        for source, live in ((self.new_key, self.live_key), (self.new_cert, self.live_cert)):
            staged = live.with_suffix(".tmp")
            staged.write_bytes(source.read_bytes())
            os.replace(staged, live)


def trusting(cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_tls(
    proxy: Proxy, backend_id: str, cert: Path
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            proxy.port,
            ssl=trusting(cert),
            server_hostname=f"{backend_id}.{CLUSTER}",
        ),
        10,
    )


async def get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str = "/headers"
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return await read_response(reader)


async def test_https_with_a_certificate_swapped_on_disk(
    make_proxy: MakeProxy, start_backend: StartBackend, tmp_path: Path
) -> None:
    certs = LiveCertificates(tmp_path)
    old_cert, new_cert = certs.old_cert, certs.new_cert
    proxy = await make_proxy(
        tls_cert_file=str(certs.live_cert),
        tls_key_file=str(certs.live_key),
        tls_reload_interval_secs=0.1,
        https_redirect_listen="127.0.0.1:0",
    )
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    host = proxy.host(backend.id)

    reader, writer = await open_tls(proxy, backend.id, old_cert)
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.selected_alpn_protocol() == "http/1.1"
    status, seen = await get(reader, writer, host)
    assert status == 200
    assert b"x-forwarded-proto: https" in seen.lower()

    certs.swap()

    deadline = time.monotonic() + 10
    while True:
        try:
            new_reader, new_writer = await open_tls(proxy, backend.id, new_cert)
            break
        except ssl.SSLCertVerificationError:
            # the reload is polled on the proxy side: external timing, bounded
            assert time.monotonic() < deadline, "the new certificate was never served"
            await asyncio.sleep(0.05)
    try:
        assert (await get(new_reader, new_writer, host))[0] == 200
        # the connection opened before the swap was not dropped
        assert (await get(reader, writer, host))[0] == 200
    finally:
        new_writer.close()
        writer.close()
    # and the old certificate is no longer served
    try:
        _, stale = await open_tls(proxy, backend.id, old_cert)
    except ssl.SSLCertVerificationError:
        pass
    else:
        stale.close()
        raise AssertionError("the old certificate is still served")

    # under TLS the auth cookie is marked Secure
    proxy.routes.set_ready("guarded", backend.ip, backend.port, "tok")
    reader, writer = await open_tls(proxy, "guarded", new_cert)
    try:
        writer.write(
            f"GET /_plane_auth?token=tok HTTP/1.1\r\nHost: guarded.{CLUSTER}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 302 ")
    assert b"set-cookie: _plane_auth=tok; Path=/; HttpOnly; SameSite=Lax; Secure\r\n" in head

    # WebSocket over TLS: the tunnel copies between an encrypted and a plain socket
    async with connect(
        f"wss://{backend.id}.{CLUSTER}:{proxy.port}/",
        host="127.0.0.1",
        port=proxy.port,
        ssl=trusting(new_cert),
        proxy=None,
    ) as ws:
        for n in range(1, 7):
            await ws.send(str(n))
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(6)] == [
            str(n) for n in range(1, 7)
        ]
        big = bytes(range(256)) * 1024
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 10) == big

    # the plain listener sends browsers to HTTPS
    redirect_port = proxy.server.redirect_port
    assert redirect_port is not None
    answer = await raw_request(
        redirect_port, f"GET /a/b?c=d HTTP/1.1\r\nHost: {backend.id}.{CLUSTER}:80\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 301 ")
    expected = f"location: https://{backend.id}.{CLUSTER}:{proxy.port}/a/b?c=d\r\n".encode()
    assert expected in answer.lower()


async def test_broken_certificate_files_keep_the_current_one(
    make_proxy: MakeProxy, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "good")
    proxy = await make_proxy(tls_cert_file=str(cert), tls_key_file=str(key))
    store = proxy.server.certificates
    assert store is not None
    key.write_text("not a key\n")
    assert store.check() is False  # logged, not raised
    reader, writer = await open_tls(proxy, "abc", cert)
    try:
        status, _ = await get(reader, writer, f"abc.{CLUSTER}")
        assert status == 404  # served over TLS by the proxy itself
    finally:
        writer.close()


async def test_unusable_tls_settings_are_config_errors(
    make_proxy: MakeProxy, tmp_path: Path
) -> None:
    cert, _ = make_certificate(tmp_path, "lonely")
    with pytest.raises(ConfigError, match="tls_key_file"):
        await make_proxy(tls_cert_file=str(cert), tls_key_file=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="go together"):
        await make_proxy(tls_cert_file=str(cert))
    with pytest.raises(ConfigError, match="https_redirect_listen"):
        await make_proxy(https_redirect_listen="127.0.0.1:0")
