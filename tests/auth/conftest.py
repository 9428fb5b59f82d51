"""A nats-server with the users and permissions `plane auth` makes, and clients of each role."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client

from shared import authconf, credentials
from tests.support.natsserver import NatsServer

CLUSTER = "plane.auth.test"
DRONES = ("drone-a", "drone-b")


@dataclass
class AuthSetup:
    directory: Path
    server: NatsServer

    def creds(self, who: str) -> Path:
        """`controller`, `client`, `admin`, or a drone's ID."""
        if who in DRONES:
            return self.directory / authconf.creds_name("drone", who)
        return self.directory / authconf.creds_name(who)


def make_auth(directory: Path) -> Path:
    """`plane auth init` and `add-drone` for each test drone; the server config to start."""
    authconf.init(directory, CLUSTER)
    for drone in DRONES:
        authconf.add_drone(directory, drone)
    server_conf = directory / "server.conf"
    server_conf.write_text(f"include ./{authconf.CONF_FILE}\n")
    return server_conf


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthSetup]:
    directory = tmp_path / "auth"
    config = make_auth(directory)
    server = await NatsServer.start(
        tmp_path / "nats", config=config, log=tmp_path / "nats-server.log"
    )
    try:
        yield AuthSetup(directory, server)
    finally:
        await server.stop()


@dataclass
class Peer:
    """A raw NATS connection with one role's credentials, recording permission violations."""

    nc: Client
    violations: list[str] = field(default_factory=list)

    async def settled(self) -> list[str]:
        """The violations of everything sent so far (the server answers them before a PONG).

        Two flushes, as in `shared.bus.settle`: nats-py may write the first PING ahead
        of commands still in its buffer.
        """
        for _ in range(2):
            await self.nc.flush(timeout=5)
        return list(self.violations)


Connect = Callable[[str], Awaitable[Peer]]


@pytest.fixture
async def connect_as(auth: AuthSetup) -> AsyncIterator[Connect]:
    peers: list[Peer] = []

    async def connect(who: str) -> Peer:
        found = credentials.read(str(auth.creds(who)))
        peer = Peer(nc=Client())

        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                peer.violations.append(str(exc))

        await peer.nc.connect(
            servers=[auth.server.url],
            nkeys_seed_str=found.seed,
            inbox_prefix=found.inbox or "_INBOX",
            error_cb=on_error,
            allow_reconnect=False,
        )
        peers.append(peer)
        return peer

    yield connect
    for peer in peers:
        await peer.nc.close()
