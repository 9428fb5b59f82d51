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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors

from tests.support.natsserver import NatsServer

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

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

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
    extra: str = ""  # configuration every node gets too (authorization, tls, ...)
    name: str = "plane-test"
    _started: set[str] = field(default_factory=set)

    @classmethod
    def plan(
        cls, directory: Path, size: int = 3, extra: str = "", hosts: list[str] | None = None
    ) -> NatsCluster:
        nodes = []
        for index in range(size):
            host = hosts[index] if hosts else "127.0.0.1"
            node_dir = directory / f"n{index + 1}"
            node_dir.mkdir(parents=True, exist_ok=True)
            nodes.append(Node(f"n{index + 1}", node_dir, host, free_port(host), free_port(host)))
        return cls(nodes, extra)

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
            f"  routes: [{routes}]\n}}\n" + self.extra
        )

    async def start(self) -> NatsCluster:
        await asyncio.gather(*(self.start_node(node) for node in self.nodes))
        return self

    async def start_node(self, node: Node) -> None:
        self._write_config(node)
        node.server = await NatsServer.start(
            node.store, node.port, log=node.log, config=node.config, host=node.host
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
