"""Hostile neighbour: a well-behaved client's latency while one connection floods.

One proxy process routes two backends: `other` (nginx, a small body) and `sink`
(the `sink` below, which reads request bodies and answers 200). wrk asks `other`
over one connection, alone, then while a `flood` process sends one endless
chunked POST to `sink` in 1-byte chunks (`1\\r\\na\\r\\n` over and over, as fast as
the proxy reads them). What matters is wrk's p50 and p99 while flooding against
alone, and that it sees no error. Each round runs on a proxy process of its own,
stopped after it: Linux hands a reset socket's queued bytes to the reader before
the reset, so a flood outlives its sender by as long as the proxy takes to read
them.

`python -m tests.bench.flood sink` and `python -m tests.bench.flood flood
--port P --host H --seconds S` are the two helper processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from pathlib import Path

import h11

from tests.bench import nginx, wrk
from tests.bench.harness import Results
from tests.bench.services import (
    LOAD_CPUS,
    Proc,
    Server,
    host_of,
    note_placement,
    our_proxy,
    pinned,
)

BENCH = "hostile neighbour"
CASE = "other client, 1 conn"
CHUNK = b"1\r\na\r\n"
BLOCK = CHUNK * 10_000  # 60 KB of 1-byte chunks per write


class Sink(asyncio.Protocol):
    """Reads whole requests, bodies and all, and answers each with 200: with the body
    bytes it has received from everyone so far, which is how the bench learns how
    much of the flood got through."""

    received = 0

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Data):
                Sink.received += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                body = b"%d" % Sink.received
                headers = [("content-length", str(len(body)))]
                out = self.conn.send(h11.Response(status_code=200, headers=headers))
                self.transport.write(out + self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
                self.conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


async def sink() -> None:
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def flood(port: int, host: str, seconds: float) -> None:
    """One chunked POST of 1-byte chunks for `seconds`, then a reset (the kernel drops
    what the proxy has not read yet); prints how much the proxy took."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    head = f"POST /flood HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
    sock.sendall(head.encode() + BLOCK)
    print("flooding", flush=True)
    sock.settimeout(0.2)
    sent = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        try:
            sent += sock.send(BLOCK)
        except TimeoutError:
            continue
    took = time.monotonic() - began
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    print(json.dumps({"sent": sent, "secs": took}), flush=True)


async def sink_received(port: int) -> int:
    """Body bytes the sink has been sent so far, asked directly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(answer.rpartition(b"\r\n\r\n")[2])


class Flooder(Proc):
    @classmethod
    async def begin(cls, port: int, seconds: float) -> Flooder:
        argv = [
            sys.executable, "-m", "tests.bench.flood", "flood",
            "--port", str(port), "--host", host_of("sink"), "--seconds", str(seconds),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *pinned(LOAD_CPUS, argv), stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"flooding":
            await cls(proc).stop()
            raise RuntimeError(f"the flood did not begin: {line!r}")
        return cls(proc)

    async def result(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), 120)
        await self.proc.wait()
        return dict(json.loads(out.splitlines()[-1])) if out.strip() else {}


async def one_round(
    results: Results, workdir: Path, routes: dict[str, int], sink_port: int, seconds: int
) -> int:
    """Alone, then flooding, on a proxy process of the round's own (stopped after it,
    with what the kernel still holds of the flood); the flooded run's errors."""
    ours = await our_proxy(workdir, routes)
    try:
        url = f"http://127.0.0.1:{ours.port}/"
        host = host_of("other")
        await wrk.run(url, connections=1, seconds=1, host=host, cpus=LOAD_CPUS)  # warm-up
        alone = await wrk.run(url, connections=1, seconds=seconds, host=host, cpus=LOAD_CPUS)
        wrk.record(results, BENCH, CASE, "alone", alone)
        before = await sink_received(sink_port)
        flooder = await Flooder.begin(ours.port, seconds + 1)
        try:
            during = await wrk.run(url, connections=1, seconds=seconds, host=host, cpus=LOAD_CPUS)
            flood_result = await flooder.result()
        finally:
            await flooder.stop()
        got = await sink_received(sink_port) - before  # 1-byte chunks: bytes are chunks
    finally:
        await ours.stop()
    if not during.requests_per_sec:
        # Not one answer in the whole run: count it as waited out, and as an error.
        waited = seconds * 1000.0
        during = wrk.WrkResult(0.0, waited, waited, max(during.errors, 1))
    wrk.record(results, BENCH, CASE, "flooding", during)
    secs = float(str(flood_result.get("secs", 1.0)))
    results.add(BENCH, "the flood", "flooder", "chunks relayed", got / secs, "/s")
    print(
        f"  {BENCH}: alone p50 {alone.p50_ms:.3f} p99 {alone.p99_ms:.3f} ms; "
        f"flooding p50 {during.p50_ms:.3f} p99 {during.p99_ms:.3f} ms, "
        f"{during.errors} errors; {got:,} flood chunks relayed in {secs:.1f} s",
        flush=True,
    )
    return during.errors


async def run(results: Results, workdir: Path, *, quick: bool) -> None:
    seconds = 2 if quick else 4
    rounds = 2 if quick else 3
    note_placement(results)
    workdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    async with contextlib.AsyncExitStack() as stack:
        other = await nginx.upstream(workdir / "other", cpus=LOAD_CPUS)
        stack.push_async_callback(other.stop)
        argv = [sys.executable, "-m", "tests.bench.flood", "sink"]
        sink_server = await Server.launch(argv, workdir / "sink.log", cpus=LOAD_CPUS)
        stack.push_async_callback(sink_server.stop)
        routes = {"other": other.port, "sink": sink_server.port}
        for _ in range(rounds):
            failures += await one_round(results, workdir, routes, sink_server.port, seconds)
    results.add(BENCH, CASE, "flooding", "errors, all rounds", failures, "", False)
    results.ratio(BENCH, CASE, "p50", "flooding", "alone")
    results.ratio(
        BENCH, CASE, "p99", "flooding", "alone", target="<= 2", check=lambda v: v <= 2
    )  # fmt: skip
    results.goal(BENCH, CASE, "errors, all rounds", "flooding", target="0", check=lambda v: v == 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("sink")
    flood_parser = sub.add_parser("flood")
    flood_parser.add_argument("--port", type=int, required=True)
    flood_parser.add_argument("--host", required=True)
    flood_parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    if args.mode == "sink":
        asyncio.run(sink())
    else:
        flood(args.port, args.host, args.seconds)
