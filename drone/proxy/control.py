"""The control channel between the drone process and one proxy worker process.

A Unix stream socket pair; each message is a 4-byte big-endian length and a
msgpack-encoded tagged Struct. The drone process sends `Start` first (the
worker's settings and every route), then route changes as they happen,
`Ping` when it wants to know the worker has applied everything before it,
and `Stop`. The worker answers `Started` or `Failed` once, then sends
activity batches, `Pong`s and periodic metrics. Either side closing the
socket ends the other: the worker stops when the drone process goes away.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import cast

import msgspec

from drone.config import ProxySettings
from drone.proxy.metrics import Counters
from drone.routes import Route, RouteState

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a Start with very many routes still fits
_LENGTH = struct.Struct(">I")


# -- drone process → worker


class SetRoute(msgspec.Struct, tag="route", array_like=True):
    backend_id: str
    ready: bool
    host: str = ""
    port: int = 0
    bearer_token: str | None = None


class RemoveRoute(msgspec.Struct, tag="unroute", array_like=True):
    backend_id: str


class Start(msgspec.Struct, tag="start", array_like=True):
    index: int  # 1.. (0 is the drone process itself)
    cluster: str
    settings: ProxySettings  # `listen` names the port every process shares
    log_level: str
    log_format: str
    report_secs: float  # how often metrics are sent
    routes: list[SetRoute]


class Ping(msgspec.Struct, tag="ping", array_like=True):
    seq: int


class Stop(msgspec.Struct, tag="stop", array_like=True):
    grace: float


ToWorker = SetRoute | RemoveRoute | Start | Ping | Stop


# -- worker → drone process


class Started(msgspec.Struct, tag="started", array_like=True):
    pid: int


class Failed(msgspec.Struct, tag="failed", array_like=True):
    error: str


class Pong(msgspec.Struct, tag="pong", array_like=True):
    seq: int


class ActivityBatch(msgspec.Struct, tag="activity", array_like=True):
    busy: list[str]  # applied first
    idle: list[str]


class Report(msgspec.Struct, tag="metrics", array_like=True):
    counters: Counters


ToMain = Started | Failed | Pong | ActivityBatch | Report


def set_route(route: Route) -> SetRoute:
    if route.state is RouteState.READY:
        return SetRoute(route.backend_id, True, route.host, route.port, route.bearer_token)
    return SetRoute(route.backend_id, False, bearer_token=route.bearer_token)


def route_message(backend_id: str, route: Route | None) -> SetRoute | RemoveRoute:
    """A change the route table announced (None: removed)."""
    return RemoveRoute(backend_id) if route is None else set_route(route)


class ChannelError(Exception):
    """The peer sent something that is not a message."""


class FrameReader:
    """Bytes in, whole messages out."""

    def __init__(self, decoder: msgspec.msgpack.Decoder[object]) -> None:
        self._decoder = decoder
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[object]:
        buffer = self._buffer
        buffer += data
        out = []
        offset = 0
        while len(buffer) - offset >= 4:
            (size,) = _LENGTH.unpack_from(buffer, offset)
            if size > MAX_MESSAGE_BYTES:
                raise ChannelError(f"a {size}-byte message is more than allowed")
            end = offset + 4 + size
            if len(buffer) < end:
                break
            try:
                out.append(self._decoder.decode(memoryview(buffer)[offset + 4 : end]))
            except msgspec.DecodeError as exc:
                raise ChannelError(str(exc)) from None
            offset = end
        if offset:
            del buffer[:offset]
        return out


_encoder = msgspec.msgpack.Encoder()


def frame(message: msgspec.Struct) -> bytes:
    payload = _encoder.encode(message)
    return _LENGTH.pack(len(payload)) + payload


class Channel(asyncio.Protocol):
    """One end of the control socket: frames in → `on_message`, EOF or garbage → `on_lost`."""

    def __init__(
        self,
        decoder: msgspec.msgpack.Decoder[object],
        on_message: Callable[[object], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._reader = FrameReader(decoder)
        self._on_message = on_message
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ChannelError as exc:
            log.error("control channel garbled: %s", exc)
            self.close()
            return
        for message in messages:
            if self.closed:
                return
            self._on_message(message)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._on_lost()

    def send(self, message: msgspec.Struct) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame(message))

    def send_frame(self, data: bytes) -> None:
        """An already framed message (the same one going to several workers)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


TO_WORKER: msgspec.msgpack.Decoder[object] = msgspec.msgpack.Decoder(ToWorker)
TO_MAIN: msgspec.msgpack.Decoder[object] = msgspec.msgpack.Decoder(ToMain)
