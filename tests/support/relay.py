"""Relays that stand between a process and a server, so a test can cut the line.

`UnixRelay` fronts a unix socket (the Docker engine), `TcpRelay` a TCP port
(nats-server). `cut` refuses new connections and breaks the open ones, as a
stopped server or a pulled cable would; `start` lets connections through
again. A TCP relay keeps its port across cuts, so clients reconnect to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path


class _Relay:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await self._listen()

    async def cut(self) -> None:
        """Refuse new connections and break every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        self._after_cut()

    async def _listen(self) -> asyncio.Server:
        raise NotImplementedError

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise NotImplementedError

    def _after_cut(self) -> None:
        pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
            self._tasks.discard(task)
        for end in (writer, up_writer):
            end.transport.abort()
            self._writers.discard(end)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()


class UnixRelay(_Relay):
    """A unix socket at `path` in front of the one at `target`."""

    def __init__(self, path: Path, target: str) -> None:
        super().__init__()
        self.path = path
        self.target = target

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_unix_server(self._serve, str(self.path))

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(self.target)

    def _after_cut(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class TcpRelay(_Relay):
    """A loopback port (chosen once, kept across cuts) in front of `host:port`."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.target)
