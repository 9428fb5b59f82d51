"""WebSocket load for the benchmarks, in a process of its own (pinned like wrk).

    python -m tests.bench.wsclient rtt  --port P --host H --count N [--size S]
    python -m tests.bench.wsclient bulk --port P --host H --seconds T [--size S]
    python -m tests.bench.wsclient idle --port P --host H --count N

`rtt` sends N text messages one at a time on one connection and waits for each
echo (blocking socket, no event loop in the way); prints the p50 and p99 round
trip. `bulk` writes binary messages of S bytes for T seconds, then one text
message, and stops the clock when its echo is back, so every byte has reached
the upstream; prints MB/s. `idle` opens N connections (a bounded number of
handshakes in flight), prints `open N`, holds them until a line arrives on
stdin, then closes them and prints how many the other side had closed early.
Results are one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any, cast

import uvloop

from tests.bench import ws
from tests.bench.harness import percentile
from tests.bench.services import raise_nofile

MB = 1_000_000


def connect(port: int, host: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(ws.handshake(host))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed during the handshake: {head!r}")
        head += chunk
    if not ws.switched(head):
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    if not head.endswith(b"\r\n\r\n"):
        raise RuntimeError("data before the first message")
    return sock


def read_exactly(sock: socket.socket, buffer: memoryview) -> None:
    got = 0
    while got < len(buffer):
        n = sock.recv_into(buffer[got:])
        if not n:
            raise RuntimeError("connection closed mid-message")
        got += n


def rtt(args: argparse.Namespace) -> dict[str, Any]:
    sock = connect(args.port, args.host)
    message = ws.frame(ws.TEXT, b"x" * args.size, masked=True)
    expected = ws.frame(ws.TEXT, b"x" * args.size)
    buffer = memoryview(bytearray(len(expected)))
    samples: list[float] = []
    clock = time.perf_counter_ns
    for n in range(args.warmup + args.count):
        began = clock()
        sock.sendall(message)
        read_exactly(sock, buffer)
        if n >= args.warmup:
            samples.append((clock() - began) / 1e6)
    if buffer != expected:
        raise RuntimeError("the echo differs from the message")
    sock.sendall(ws.frame(ws.CLOSE, b"\x03\xe8", masked=True))
    sock.close()
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    sock = connect(args.port, args.host)
    message = ws.frame(ws.BINARY, b"\xa5" * args.size, masked=True)
    marker = ws.frame(ws.TEXT, b"done", masked=True)
    echo = ws.frame(ws.TEXT, b"done")
    sent = 0
    began = time.perf_counter()
    deadline = began + args.seconds
    while time.perf_counter() < deadline:
        for _ in range(16):
            sock.sendall(message)
        sent += 16
    sock.sendall(marker)
    buffer = memoryview(bytearray(len(echo)))
    read_exactly(sock, buffer)
    elapsed = time.perf_counter() - began
    if buffer != echo:
        raise RuntimeError("unexpected answer to the end marker")
    sock.close()
    return {"mb_per_s": sent * args.size / elapsed / MB, "messages": sent, "secs": elapsed}


class IdleConnection(asyncio.Protocol):
    def __init__(self, request: bytes, opened: asyncio.Future[bool]) -> None:
        self.request = request
        self.opened = opened
        self.head = b""
        self.transport: asyncio.Transport | None = None
        self.closed_early = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            return  # nothing is sent to idle clients; drop it if it is
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.opened.set_result(ws.switched(self.head))
            self.head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_early = True
        if not self.opened.done():
            self.opened.set_result(False)


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = ws.handshake(args.host)
    gate = asyncio.Semaphore(args.concurrency)
    conns: list[IdleConnection] = []
    failed = 0

    async def open_one() -> None:
        nonlocal failed
        async with gate:
            opened: asyncio.Future[bool] = loop.create_future()
            conn = IdleConnection(request, opened)
            try:
                await loop.create_connection(lambda: conn, "127.0.0.1", args.port)
                ok = await asyncio.wait_for(opened, 30)
            except (OSError, TimeoutError):
                ok = False
            if ok:
                conns.append(conn)
            else:
                failed += 1
                if conn.transport is not None:
                    conn.transport.abort()

    began = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(args.count)))
    opening = time.perf_counter() - began
    print(f"open {len(conns)} failed {failed} secs {opening:.3f}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    lost = sum(conn.closed_early for conn in conns)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0)
    return {"opened": len(conns), "failed": failed, "lost": lost, "secs": opening}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.wsclient")
    parser.add_argument("mode", choices=["rtt", "bulk", "idle"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True, help="the Host header")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--size", type=int, default=0, help="message bytes (rtt 32, bulk 64 KiB)")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=256, help="idle: handshakes at once")
    args = parser.parse_args()
    if args.mode == "rtt":
        args.size = args.size or 32
        result = rtt(args)
    elif args.mode == "bulk":
        args.size = args.size or 64 * 1024
        result = bulk(args)
    else:
        raise_nofile(args.count + 1024)
        result = uvloop.run(idle(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
