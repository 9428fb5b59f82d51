"""A WebSocket upstream for the benchmarks, in a process of its own on uvloop.

`python -m tests.bench.wsecho` prints `listening PORT` and serves until SIGTERM.
Text messages are echoed and pings answered (round-trip latency); binary
messages are read and dropped without unmasking (bulk throughput: the sink
costs a frame head per 64 KiB, so it is not what limits the figure; a text
message after them, echoed, marks that all of them arrived). Close is
answered with close. Each connection costs a small object and its socket,
so ten thousand idle ones are cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop

from tests.bench import ws
from tests.bench.services import raise_nofile

MAX_HEAD = 16 * 1024


class EchoConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.pending = b""  # an unfinished handshake, frame head or echoed frame
        self.skip = 0  # bytes of a dropped binary payload still to come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.frames(data)
        else:
            self.handshake(data)

    def handshake(self, data: bytes) -> None:
        assert self.transport is not None
        head = self.pending + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self.pending = head
            if len(head) > MAX_HEAD:
                self.transport.close()
            return
        self.pending = b""
        key = b""
        for line in head[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        if not key:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws.accept_key(key) + b"\r\n\r\n"
        )
        self.upgraded = True
        if end + 4 < len(head):
            self.frames(head[end + 4 :])

    def frames(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        size = len(data)
        if self.skip >= size:
            self.skip -= size
            return
        pos = self.skip
        self.skip = 0
        if self.pending:
            data = self.pending + data[pos:]
            self.pending = b""
            pos, size = 0, len(data)
        while pos < size:
            parsed = ws.parse_head(data, pos)
            if parsed is None:
                self.pending = data[pos:]
                return
            opcode, length, head, key = parsed
            if opcode == ws.BINARY or opcode == ws.CONTINUATION:
                pos += head + length
                if pos > size:
                    self.skip = pos - size
                    return
                continue
            if pos + head + length > size:
                self.pending = data[pos:]
                return
            payload = data[pos + head : pos + head + length]
            pos += head + length
            if key:
                payload = ws.mask(payload, key)
            if opcode == ws.TEXT:
                transport.write(ws.frame(ws.TEXT, payload))
            elif opcode == ws.PING:
                transport.write(ws.frame(ws.PONG, payload))
            elif opcode == ws.CLOSE:
                transport.write(ws.frame(ws.CLOSE, payload[:2]))
                transport.close()
                return


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(EchoConnection, host, int(port), backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.wsecho")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--nofile", type=int, default=65536, help="open-file limit to ask for")
    args = parser.parse_args()
    raise_nofile(args.nofile)
    uvloop.run(serve(args.listen))


if __name__ == "__main__":
    main()
