"""The plain-HTTP listener that sends browsers to the HTTPS one.

Every request is answered with a redirect to the same host and path over
HTTPS (301 for GET and HEAD, 308 for other methods so they keep their body),
then the socket closes. It never reaches a backend.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import cast

import h11

from drone.proxy import answers, response_writer

_HOST_RE = re.compile(rb"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def https_location(host: bytes, target: bytes, https_port: int) -> bytes | None:
    """The HTTPS URL for a request, or None when the Host cannot be used."""
    if not _HOST_RE.match(host) or not target.startswith(b"/"):
        return None
    name = host.rsplit(b":", 1)[0] if b":" in host else host
    port = b"" if https_port == 443 else b":%d" % https_port
    return b"https://" + name.lower() + port + target


class RedirectConnection(asyncio.Protocol):
    def __init__(self, https_port: Callable[[], int], head_timeout: float, max_head: int) -> None:
        self._https_port = https_port
        self._head_timeout = head_timeout
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._head_timeout, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            canned = answers.BY_HINT.get(exc.error_status_hint, answers.BAD_REQUEST)
            self._answer(canned, response_writer.NO_REQUEST)
            return
        if isinstance(event, h11.Request):
            self._redirect(event)

    def eof_received(self) -> bool | None:
        return None

    def _redirect(self, request: h11.Request) -> None:
        host = request.headers.raw_items()
        value = next((v for n, v in host if n.lower() == b"host"), b"")
        location = https_location(value, request.target, self._https_port())
        peer = response_writer.Peer(
            request.method == b"HEAD", request.http_version == b"1.0", False
        )
        if location is None:
            self._answer(answers.BAD_REQUEST, peer)
            return
        status = 301 if request.method in (b"GET", b"HEAD") else 308
        headers = ((b"location", location), (b"content-length", b"0"))
        self._answer(answers.Canned(status, headers, b""), peer)

    def _answer(self, canned: answers.Canned, peer: response_writer.Peer) -> None:
        assert self._transport is not None
        self._done = True
        data, _ = response_writer.canned_response(canned, peer, close=True)
        self._transport.write(data)
        self._transport.close()
