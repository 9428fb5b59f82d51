"""A whole cluster of real processes for end-to-end tests.

nats-server, `plane-controller` and any number of `plane-drone` processes run
from the installed entry points, each with its own ports (picked free on
loopback) and, for drones, its own state directory; Docker is the real
engine. Every process appends its output to `<name>.log` in the test's
directory, so a failing test can show the last lines of each.

Readiness is what a user could see: the controller answers the drone listing,
a drone is listed as ready and its proxy port answers. Processes can be killed
(`SIGKILL`) and started again with the same flags, state directory and ports.

Every container a drone creates carries `dev.plane.test=<test id>` (the
drone's `docker.extra_labels`), so the `docker` fixture removes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiodocker
import httpx
import msgspec
from websockets.asyncio.client import connect as websocket_connect

from shared.bus import NatsSettings
from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState
from tests.support.docker import TEST_LABEL, TESTBACKEND_IMAGE
from tests.support.natsserver import NatsServer
from tests.support.processes import terminate

BIN = Path(sys.executable).parent
IMAGE = TESTBACKEND_IMAGE
START_TIMEOUT_SECS = 30.0
STOP_GRACE_SECS = 20.0
TAIL_LINES = 40

# Short rhythms so a restarted controller knows the drones within a second; the same
# value on both sides, as the protocol wants.
HEARTBEAT_SECS = "1"

T = TypeVar("T")
# The fixture: start one with N drones (options: controller_env, drone_env).
MakeCluster = Callable[..., Awaitable["Cluster"]]

_DRONE_READY = re.compile(r"drone (\S+) ready: ")


class ClusterError(AssertionError):
    """A process of the cluster did not do what it should; the message says which."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail_of(log: Path, lines: int = TAIL_LINES) -> str:
    if not log.exists():
        return "(no output)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _clean_environment() -> dict[str, str]:
    """This process's environment without `PLANE_*` settings meant for someone else."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PLANE_")}


class Daemon:
    """One of our processes: started again with the same argv and environment at will,
    its output appended to one log file across starts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = {**_clean_environment(), **env}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._log_offset = 0  # where the current run's output begins in the log

    async def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        program = self.argv[self.argv.index("--") + 1] if "--" in self.argv else self.argv[0]
        if not (Path(program).exists() or shutil.which(program)):
            raise ClusterError(f"{program} not found: run `make install`")
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"==== start {self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self._log_offset = out.tell()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def output(self) -> str:
        """What the current (or last) run has written so far."""
        with self.log.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    async def wait_output(self, text: str, timeout: float = START_TIMEOUT_SECS) -> None:
        """Until the current run has written `text`."""

        async def written() -> bool | None:
            return True if text in self.output() else None

        await until(f"{self.name} to say {text!r}", timeout, written, self)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise ClusterError(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.tail()}"
            )

    def tail(self) -> str:
        return tail_of(self.log)

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine loses power."""
        assert self.proc is not None and self.running, f"{self.name} is not running"
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self, grace: float = STOP_GRACE_SECS) -> int | None:
        """SIGTERM, then SIGKILL after `grace`; the exit status, or None if it was not
        running."""
        if not self.running:
            return None
        assert self.proc is not None
        return await terminate(self.proc, grace)


@dataclass
class Drone:
    daemon: Daemon
    proxy_port: int
    metrics_port: int
    state_dir: Path
    drone_id: str = ""
    frozen: bool = False  # stopped with SIGSTOP: alive, but deaf and silent

    def freeze(self) -> None:
        """SIGSTOP: the host hangs (or falls off the network) with everything still running."""
        assert self.daemon.proc is not None and self.daemon.running
        self.daemon.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGCONT)
        self.frozen = False


async def until(
    what: str, timeout: float, probe: Callable[[], Awaitable[T | None]], *daemons: Daemon
) -> T:
    """`probe()` again and again (with short pauses) until it gives something other than
    None; raise `ClusterError` naming `what` after `timeout`, or at once if one of
    `daemons` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for daemon in daemons:
            daemon.check_alive()
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


class Cluster:
    """nats-server, one controller and the drones added, for one cluster name.

    The cluster is named `e2e-<random>.localhost:<port>`, where the port is the
    first drone's proxy port: the URLs the `plane` CLI prints then lead there.
    """

    def __init__(
        self,
        workdir: Path,
        nats: NatsServer,
        test_id: str,
        *,
        controller_env: Mapping[str, str] | None = None,
        drone_env: Mapping[str, str] | None = None,
        auth: Path | None = None,
        domain: str | None = None,
        first_proxy_port: int | None = None,
    ) -> None:
        """`auth`: a `plane auth` directory (with drones `drone1`, `drone2`, ... added): every
        process then uses its role's credentials."""
        self.workdir = workdir
        self.nats = nats
        self.test_id = test_id
        self.first_proxy_port = first_proxy_port or free_port()
        self.domain = domain or f"e2e-{uuid.uuid4().hex[:8]}.localhost"
        self.name = f"{self.domain}:{self.first_proxy_port}"
        self.auth = auth
        self.controller_env = {"PLANE_HEARTBEAT_SECS": HEARTBEAT_SECS, **(controller_env or {})}
        if auth is not None:
            self.controller_env["PLANE_NATS__CREDENTIALS_FILE"] = str(auth / "controller.creds")
        self.drone_env = dict(drone_env or {})
        self.controllers: list[Daemon] = []
        self.controller_metrics: dict[str, int] = {}  # daemon name → its metrics port
        self._new_controller()
        self.drones: list[Drone] = []
        self._plane: PlaneClient | None = None

    @property
    def controller(self) -> Daemon:
        """The first controller (most clusters have only one)."""
        return self.controllers[0]

    def _new_controller(self) -> Daemon:
        name = "controller" if not self.controllers else f"controller{len(self.controllers) + 1}"
        port = free_port()
        argv = [
            str(BIN / "plane-controller"),
            "--nats", self.nats.url,
            "--cluster", self.name,
            "--metrics-listen", f"127.0.0.1:{port}",
        ]  # fmt: skip
        daemon = Daemon(name, argv, self.controller_env, self.workdir / f"{name}.log")
        self.controllers.append(daemon)
        self.controller_metrics[name] = port
        return daemon

    async def add_controller(self) -> Daemon:
        """Another controller for the same cluster, started and answering."""
        daemon = self._new_controller()
        await daemon.start()
        await daemon.wait_output("controller ready")
        return daemon

    # --- the client side ---------------------------------------------------------------

    @property
    def plane(self) -> PlaneClient:
        assert self._plane is not None, "the cluster is not started"
        return self._plane

    def client_settings(self, role: str = "client") -> NatsSettings:
        """How a user of the cluster reaches NATS (with `role`'s credentials under auth)."""
        creds = None if self.auth is None else str(self.auth / f"{role}.creds")
        return NatsSettings(servers=[self.nats.url], credentials_file=creds)

    def daemons(self) -> list[Daemon]:
        return [*self.controllers, *(d.daemon for d in self.drones)]

    def host(self, backend_id: str) -> str:
        """The Host a browser sends for a backend (the cluster name carries the port)."""
        return f"{backend_id}.{self.name}"

    # --- life -------------------------------------------------------------------------

    async def start(self, drones: int = 1) -> Cluster:
        await self.controller.start()
        self._plane = await PlaneClient.connect(self.client_settings(), self.name, scheme="http")
        await self.wait_controller()
        for _ in range(drones):
            await self.add_drone()
        return self

    async def wait_controller(self) -> None:
        """Until the controller answers requests for this cluster."""

        async def answers() -> bool | None:
            with contextlib.suppress(PlaneError):
                await self.plane.drones()
                return True
            return None

        await until("the controller to answer", START_TIMEOUT_SECS, answers, self.controller)

    async def add_drone(self, docker_host: str | None = None) -> Drone:
        index = len(self.drones)
        name = f"drone{index + 1}"
        proxy_port = self.first_proxy_port if index == 0 else free_port()
        metrics_port = free_port()
        state_dir = self.workdir / name
        argv = [
            str(BIN / "plane-drone"),
            "--nats", self.nats.url,
            "--cluster", self.name,
            "--ip", "127.0.0.1",
            "--proxy-listen", f"127.0.0.1:{proxy_port}",
            "--metrics-listen", f"127.0.0.1:{metrics_port}",
            "--state-dir", str(state_dir),
        ]  # fmt: skip
        env = {
            # Every container it makes is this test's, removed after it.
            "PLANE_DOCKER__EXTRA_LABELS": msgspec.json.encode({TEST_LABEL: self.test_id}).decode(),
            "PLANE_AGENT__TERMINATE_ON_SHUTDOWN": "true",
            "PLANE_DOCKER__IMAGE_GC": "false",  # the engine is shared with other tests
            "PLANE_AGENT__HEARTBEAT_SECS": HEARTBEAT_SECS,
            **self.drone_env,
        }
        if docker_host is not None:
            env["PLANE_DOCKER__SOCKET"] = docker_host.removeprefix("unix://")
        if self.auth is not None:
            env["PLANE_NATS__CREDENTIALS_FILE"] = str(self.auth / f"drone-{name}.creds")
        daemon = Daemon(name, argv, env, self.workdir / f"{name}.log")
        drone = Drone(daemon, proxy_port, metrics_port, state_dir)
        self.drones.append(drone)
        await self.start_drone(drone)
        return drone

    async def start_drone(self, drone: Drone) -> None:
        """Start (or start again) a drone; returns once the controller lists it as ready
        and its proxy answers."""
        daemon = drone.daemon
        await daemon.start()

        async def said_ready() -> str | None:
            match = _DRONE_READY.search(daemon.output())
            return match.group(1) if match else None

        drone_id = await until(f"{daemon.name} to start", START_TIMEOUT_SECS, said_ready, daemon)
        if drone.drone_id and drone_id != drone.drone_id:
            raise ClusterError(f"{daemon.name} came back as {drone_id}, not {drone.drone_id}")
        drone.drone_id = drone_id
        await self.wait_drone_ready(drone)

        async def proxy_answers() -> httpx.Response | None:
            with contextlib.suppress(httpx.TransportError):
                return await self.get(drone, "unknown-backend")
            return None

        await until(f"{daemon.name}'s proxy", START_TIMEOUT_SECS, proxy_answers, daemon)

    async def wait_drone_ready(
        self, drone: Drone, timeout: float = START_TIMEOUT_SECS, *, ready: bool = True
    ) -> None:
        """Until the controller lists the drone as taking backends (or, `ready=False`, not)."""

        async def listed_ready() -> bool | None:
            with contextlib.suppress(PlaneError):
                listed = await self.plane.drones()
                if any(d.drone_id == drone.drone_id and d.ready is ready for d in listed):
                    return True
            return None

        what = f"{drone.drone_id} listed as {'ready' if ready else 'not ready'}"
        await until(what, timeout, listed_ready, *self.daemons())

    async def restart_controller(self, daemon: Daemon | None = None) -> None:
        """Start a controller again (the first by default); returns once it says it is ready."""
        daemon = daemon or self.controller
        await daemon.start()
        await daemon.wait_output("controller ready")
        await self.wait_controller()

    async def stop(self) -> list[str]:
        """Stop every process (drones first, SIGTERM); returns the problems seen."""
        problems = []
        for daemon in reversed(self.daemons()):
            status = await daemon.stop()
            if status not in (None, 0):
                problems.append(f"{daemon.name} exited with status {status} on SIGTERM")
        if self._plane is not None:
            await self._plane.close()
            self._plane = None
        return problems

    def tails(self) -> list[tuple[str, str]]:
        """The last lines each process wrote, nats-server's included."""
        logs = [(d.name, d.log) for d in self.daemons()]
        if self.nats.log is not None:
            logs.append(("nats-server", self.nats.log))
        return [(name, tail_of(path)) for name, path in logs]

    # --- what a user does -----------------------------------------------------------------

    async def spawn_ready(self, max_idle_secs: int = 60) -> str:
        """Schedule a test backend through the client library and wait until it is Ready."""
        scheduled = await self.plane.schedule(image=IMAGE, max_idle_secs=max_idle_secs)
        await self.plane.wait_for_state(scheduled.backend_id, BackendState.READY, timeout=30)
        return scheduled.backend_id

    async def get(
        self,
        drone: Drone,
        backend_id: str,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """An HTTP GET to a backend through one drone's proxy, as a browser sends it."""
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            return await client.get(
                f"http://127.0.0.1:{drone.proxy_port}{path}",
                headers={**(headers or {}), "Host": self.host(backend_id)},
            )

    async def websocket_echo(self, drone: Drone, backend_id: str, text: str) -> str:
        """Open a WebSocket to a backend through a drone's proxy, send `text`, return the
        echo, close."""
        async with connect_websocket(self, drone, backend_id) as ws:
            await ws.send(text)
            reply = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(reply, str)
        return reply

    async def container_names(self, docker: aiodocker.Docker, backend_id: str) -> list[str]:
        """The containers Docker has for a backend of this test (running or not)."""
        found = await docker.containers.list(
            all=True,
            filters={"label": [f"dev.plane.backend={backend_id}", f"{TEST_LABEL}={self.test_id}"]},
        )
        return [c["Names"][0] if c["Names"] else c.id for c in found]

    async def wait_container_gone(
        self, docker: aiodocker.Docker, backend_id: str, timeout: float = 15.0
    ) -> None:
        async def gone() -> bool | None:
            return True if not await self.container_names(docker, backend_id) else None

        await until(f"the container of {backend_id} to be removed", timeout, gone)


def connect_websocket(cluster: Cluster, drone: Drone, backend_id: str) -> websocket_connect:
    """A WebSocket to a backend through a drone's proxy (use with `async with`)."""
    return websocket_connect(
        f"ws://{cluster.host(backend_id)}/",
        host="127.0.0.1",
        port=drone.proxy_port,
        proxy=None,
        open_timeout=10,
    )
