"""The DNS server's transports: UDP and TCP on one address, asyncio only.

Answers are computed by `controller.dnsanswer` (pure, synchronous and quick),
so a datagram is answered in the callback that received it. TCP connections
may carry several length-prefixed queries; one silent for `idle_secs` is
closed. With port 0 a free port is chosen that is free for both protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable
from typing import cast

from controller.dnsanswer import Result, ZoneData, answer_packet
from shared.config import parse_listen

log = logging.getLogger(__name__)

ResultHook = Callable[[Result, str], None]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, zones: ZoneData, on_result: ResultHook) -> None:
        self._zones = zones
        self._on_result = on_result
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            reply, result = answer_packet(data, self._zones, udp=True)
        except Exception:
            log.exception("DNS query from %s could not be answered", addr[0])
            return
        self._on_result(result, "udp")
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP: %s", exc)


class DnsServer:
    def __init__(self, zones: ZoneData, on_result: ResultHook, *, idle_secs: float) -> None:
        self._zones = zones
        self._on_result = on_result
        self._idle_secs = idle_secs
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    async def start(self, listen: str) -> None:
        host, port = parse_listen(listen)
        for _ in range(20 if port == 0 else 1):
            udp_port = await self._bind_udp(host, port)
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, host, udp_port, reuse_address=True
                )
            except OSError as exc:
                self._close_udp()
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue  # that UDP port is taken for TCP; pick another
                raise
            self.host, self.port = host, udp_port
            return
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")

    async def _bind_udp(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._zones, self._on_result),
            local_addr=(host, port),
            family=family,
        )
        self._udp = transport
        return int(transport.get_extra_info("sockname")[1])

    def _close_udp(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_secs):
                        (length,) = struct.unpack("!H", await reader.readexactly(2))
                        data = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply, result = answer_packet(data, self._zones, udp=False)
                self._on_result(result, "tcp")
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                async with asyncio.timeout(self._idle_secs):
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            return
        except Exception:
            log.exception("DNS TCP connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def stop(self) -> None:
        self._close_udp()
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._tcp.wait_closed()
            self._tcp = None
