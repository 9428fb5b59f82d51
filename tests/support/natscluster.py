"""A nats-server cluster of the test's own: N nodes with routes and JetStream on each.

Each node has its own store, client port and route port (picked free on
`host`, loopback by default), and optional extra configuration (auth, TLS)
appended to its file. Nodes can be killed, wiped and started again, as a
machine that dies and is replaced would be.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors

from tests.support.natsserver import NatsServer
from tests.support.netns import Host
from tests.support.tlsca import CertAuthority, Certificate

META_TIMEOUT_SECS = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    directory: Path
    host: str
    port: int
    route_port: int
    server: NatsServer | None = None
    on: Host | None = None  # the simulated host it runs on (None: this machine)
    tls: Certificate | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "server.conf"

    @property
    def store(self) -> Path:
        return self.directory / "store"

    @property
    def log(self) -> Path:
        return self.directory / "nats-server.log"


@dataclass
class NatsCluster:
    nodes: list[Node]
    extra: str = ""  # configuration every node gets too (authorization, accounts, ...)
    name: str = "plane-test"
    ca: CertAuthority | None = None
    _started: set[str] = field(default_factory=set)

    @classmethod
    def plan(
        cls,
        directory: Path,
        size: int = 3,
        extra: str = "",
        on: list[Host] | None = None,
        ca: CertAuthority | None = None,
    ) -> NatsCluster:
        """`on`: one simulated host per node (fixed ports there); `ca`: TLS for clients."""
        nodes = []
        for index in range(size):
            name = f"n{index + 1}"
            node_dir = directory / name
            node_dir.mkdir(parents=True, exist_ok=True)
            if on is not None:
                node = Node(name, node_dir, on[index].ip, 4222, 6222, on=on[index])
            else:
                node = Node(name, node_dir, "127.0.0.1", free_port(), free_port())
            nodes.append(node)
        if ca is not None:
            # One certificate for the cluster's addresses, as a NATS cluster behind one
            # name would have: clients check the servers they discover against it too.
            cert = ca.issue("nats-cluster", *sorted({n.host for n in nodes}))
            for node in nodes:
                node.tls = cert
        return cls(nodes, extra, ca=ca)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _write_config(self, node: Node) -> None:
        routes = ", ".join(
            f"nats-route://{other.host}:{other.route_port}"
            for other in self.nodes
            if other is not node
        )
        node.config.write_text(
            f"server_name: {node.name}\n"
            f"listen: {node.host}:{node.port}\n"
            f"cluster {{\n  name: {self.name}\n  listen: {node.host}:{node.route_port}\n"
            f"  routes: [{routes}]\n}}\n" + self._tls(node) + self.extra
        )

    def _tls(self, node: Node) -> str:
        if node.tls is None or self.ca is None:
            return ""
        return (
            f'tls {{\n  cert_file: "{node.tls.cert}"\n  key_file: "{node.tls.key}"\n'
            f'  ca_file: "{self.ca.cert}"\n}}\n'
        )

    async def start(self) -> NatsCluster:
        await asyncio.gather(*(self.start_node(node) for node in self.nodes))
        return self

    async def start_node(self, node: Node) -> None:
        self._write_config(node)
        node.server = await NatsServer.start(
            node.store,
            node.port,
            log=node.log,
            config=node.config,
            host=node.host,
            prefix=node.on.command() if node.on is not None else None,
        )

    async def kill_node(self, node: Node) -> None:
        assert node.server is not None
        await node.server.kill()

    async def replace_node(self, node: Node) -> None:
        """Kill it, wipe its store (a new machine in its place), and start it again."""
        await self.kill_node(node)
        shutil.rmtree(node.store, ignore_errors=True)
        await self.start_node(node)

    async def stop(self) -> None:
        for node in self.nodes:
            if node.server is not None:
                await node.server.stop()

    async def wait_jetstream(self, **connect: Any) -> None:
        """Until JetStream answers through every node (the cluster has elected its leader)."""
        async with asyncio.timeout(META_TIMEOUT_SECS):
            for node in self.nodes:
                if self.ca is not None:
                    connect.setdefault("tls", ssl.create_default_context(cafile=str(self.ca.cert)))
                nc = await nats.connect(node.url, allow_reconnect=False, **connect)
                try:
                    while True:
                        try:
                            await nc.jetstream().account_info()
                            break
                        except (nats.errors.Error, TimeoutError):
                            await asyncio.sleep(0.1)
                finally:
                    await nc.close()
