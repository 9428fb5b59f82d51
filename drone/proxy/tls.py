"""TLS for the proxy: the certificate in use, and its reload when the files change.

The listening socket keeps one SSLContext for its whole life; each new
handshake is moved onto the newest loaded context from the SNI callback (which
OpenSSL calls for every ClientHello, with or without a server name). Open
connections keep the context they started with, so a reload drops nothing.
A certificate and key that fail to load together are logged and the previous
pair stays in use until the files change again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int, int], ...]


def load_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class CertificateStore:
    def __init__(self, cert_file: str, key_file: str, interval: float) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._interval = interval
        self._signature = self._stat()
        self.current = load_context(cert_file, key_file)
        self._listening: ssl.SSLContext | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.reloads = 0

    def listening_context(self) -> ssl.SSLContext:
        """The context the server socket is created with."""
        if self._listening is None:
            self._listening = load_context(self.cert_file, self.key_file)
            self._listening.sni_callback = self._select
        return self._listening

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(self._interval, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def check(self) -> bool:
        """Load the files again if they changed; True when a new pair is in use."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            context = load_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "keeping the current certificate: %s does not load: %s", self.cert_file, exc
            )
            return False
        self.current = context
        self.reloads += 1
        log.info("loaded a new certificate from %s", self.cert_file)
        return True

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.check()
        self._timer = loop.call_later(self._interval, self._tick, loop)

    def _select(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self.current

    def _stat(self) -> Signature:
        out = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
            except OSError:
                out.append((0, 0, 0, 0))
                continue
            out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)
