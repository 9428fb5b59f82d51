"""A Plane deployment over simulated hosts: what an operator would run on N machines.

Hosts (network namespaces on one test bridge, `tests.support.netns`):

* `nats1`..`nats3`: a three-node NATS cluster with routes, JetStream, TLS
  from the test's own CA, and the users `plane auth` makes;
* `ctl1`, `ctl2`: a controller each (NATS node 1 and 2), answering DNS on
  their own address, run from the Plane image (deploy/images/plane) on the
  host's own Docker engine;
* `drone1`..`drone3`: a drone each, with its own Docker engine, `--ip` its
  address and its proxy bound to it (drones 1 and 3 on NATS node 1, drone 2
  on node 2);
* `browser`: asks the controllers' DNS for `{backend}.{cluster}` and connects
  to the address it gets;
* the test itself schedules as a client on NATS node 3, which no controller
  or drone uses.

Everything is torn down by `close`, in reverse, whatever failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import httpx
import msgspec

from shared import authconf, credentials
from shared.bus import NatsSettings
from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState
from tests.e2e.cluster import Daemon, until
from tests.support.docker import TEST_LABEL, TESTBACKEND_IMAGE
from tests.support.dockerd import PrivateDockerd
from tests.support.natscluster import NatsCluster
from tests.support.netns import Host, Network
from tests.support.tlsca import CertAuthority

BIN = Path(sys.executable).parent
HEARTBEAT_SECS = "1"
LOST_AFTER_SECS = 6
PROXY_PORT = 8080
PLANE_IMAGE = "plane-plane:latest"  # `make images` builds it (deploy/images/plane)
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
START_TIMEOUT_SECS = 60.0


class BedError(AssertionError):
    pass


@dataclass
class DroneHost:
    host: Host
    engine: PrivateDockerd
    daemon: Daemon
    docker: aiodocker.Docker
    drone_id: str

    @property
    def metrics(self) -> str:
        return f"{self.host.ip}:9102"


@dataclass
class ControllerHost:
    host: Host
    daemon: Daemon
    engine: PrivateDockerd  # it runs from the Plane image, on this host's own engine

    @property
    def dns(self) -> str:
        return self.host.ip


@dataclass
class Bed:
    workdir: Path
    test_id: str
    network: Network | None = None
    nats: NatsCluster | None = None
    ca: CertAuthority | None = None
    auth: Path | None = None
    controllers: list[ControllerHost] = field(default_factory=list)
    drones: list[DroneHost] = field(default_factory=list)
    browser: Host | None = None
    monitor: Host | None = None
    prometheus: Daemon | None = None
    plane: PlaneClient | None = None
    domain: str = field(default_factory=lambda: f"mh-{uuid.uuid4().hex[:6]}.test")

    @property
    def cluster(self) -> str:
        return f"{self.domain}:{PROXY_PORT}"

    # --- set-up -----------------------------------------------------------------------------

    async def start(self, drones: int = 3) -> Bed:
        self.network = network = Network.create()
        nats_hosts = [network.add_host(f"nats{n}") for n in (1, 2, 3)]
        controller_hosts = [network.add_host(f"ctl{n}") for n in (1, 2)]
        drone_hosts = [network.add_host(f"drone{n}") for n in range(1, drones + 1)]
        self.browser = network.add_host("browser")
        self.monitor = network.add_host("monitor")

        self.ca = CertAuthority.create(self.workdir / "ca")
        self.auth = self.workdir / "auth"
        authconf.init(self.auth, self.cluster)
        for n in range(1, drones + 1):
            authconf.add_drone(self.auth, f"drone{n}")
        accounts = (self.auth / authconf.CONF_FILE).read_text()
        self.nats = NatsCluster.plan(
            self.workdir / "nats", 3, extra=accounts, on=nats_hosts, ca=self.ca
        )
        await self.nats.start()
        await self.nats.wait_jetstream(nkeys_seed_str=self._seed("admin"))

        for index, host in enumerate(controller_hosts):
            await self._start_controller(host, self.nats.nodes[index].url)
        self.plane = await PlaneClient.connect(self.client_settings(), self.cluster, scheme="http")
        await until("a controller to answer", START_TIMEOUT_SECS, self._answers)
        for index, host in enumerate(drone_hosts):
            node = self.nats.nodes[index % 2]  # drones on nodes 1 and 2; node 3 is the client's
            await self._start_drone(host, node.url)
        for drone in self.drones:
            await self.wait_drone(drone.drone_id, ready=True)
        await self._start_prometheus()
        return self

    async def _start_prometheus(self) -> None:
        """Debian's Prometheus on its own host, scraping every process with the shipped rules."""
        assert self.monitor is not None
        jobs = {
            "plane-controller": [f"{c.host.ip}:9101" for c in self.controllers],
            "plane-drone": [d.metrics for d in self.drones],
        }
        config = self.workdir / "prometheus.yml"
        config.write_text(  # JSON is YAML too
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": targets}]}
                        for job, targets in jobs.items()
                    ],
                }
            )
        )
        argv = self.monitor.command(
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
            f"--web.listen-address={self.monitor.ip}:9090",
        )
        self.prometheus = Daemon("prometheus", argv, {}, self.workdir / "prometheus.log")
        await self.prometheus.start()
        await self.prometheus.wait_output("Server is ready to receive web requests", 60)

    async def prometheus_get(self, path: str) -> Any:
        assert self.monitor is not None
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            response = await client.get(f"http://{self.monitor.ip}:9090{path}")
        response.raise_for_status()
        return response.json()["data"]

    def _seed(self, role: str) -> str:
        assert self.auth is not None
        seed = credentials.read(str(self.auth / f"{role}.creds")).seed
        assert seed is not None
        return seed

    def nats_env(self, creds: str) -> dict[str, str]:
        assert self.auth is not None and self.ca is not None
        return {
            "PLANE_NATS__CREDENTIALS_FILE": str(self.auth / creds),
            "PLANE_NATS__TLS_CA_FILE": str(self.ca.cert),
            "PLANE_NATS__RECONNECT_WAIT_SECS": "0.2",
        }

    def client_settings(self, role: str = "client", node: int = 2) -> NatsSettings:
        """A user of the cluster, attached to NATS node `node` (by index; 2: the third)."""
        assert self.nats is not None and self.auth is not None and self.ca is not None
        return NatsSettings(
            servers=[self.nats.nodes[node].url],
            credentials_file=str(self.auth / f"{role}.creds"),
            tls_ca_file=str(self.ca.cert),
            reconnect_wait_secs=0.2,
        )

    async def _start_controller(self, host: Host, nats_url: str) -> None:
        """A controller from the Plane image, on the host's own engine, in the host's network.

        It runs as root in its container only because the test's credentials files
        belong to root; in production they belong to the image's `plane` user.
        """
        name = host.name
        engine = PrivateDockerd(on=host)
        await engine.start()
        await engine.load_images(PLANE_IMAGE)
        env = {
            **self.nats_env("controller.creds"),
            "PLANE_HEARTBEAT_SECS": HEARTBEAT_SECS,
            "PLANE_LOST_AFTER_SECS": str(LOST_AFTER_SECS),
        }
        argv = [
            "docker", "--host", engine.host, "run", "--rm", "--init",
            "--name", f"plane-{name}", "--network", "host", "--user", "0",
            "-v", f"{self.workdir}:{self.workdir}:ro",
            *(f"--env={key}={value}" for key, value in env.items()),
            PLANE_IMAGE,
            "plane-controller",
            "--nats", nats_url,
            "--cluster", self.cluster,
            "--metrics-listen", f"{host.ip}:9101",
            "--dns-listen", f"{host.ip}:53",
        ]  # fmt: skip
        daemon = Daemon(name, argv, {}, self.workdir / f"{name}.log")
        self.controllers.append(ControllerHost(host, daemon, engine))
        await daemon.start()
        await daemon.wait_output("controller ready", START_TIMEOUT_SECS)

    async def _start_drone(self, host: Host, nats_url: str) -> None:
        name = host.name
        engine = PrivateDockerd(on=host)
        docker = aiodocker.Docker(url=engine.host)
        drone = DroneHost(host, engine, None, docker, name)  # type: ignore[arg-type]
        self.drones.append(drone)
        await engine.start()
        await engine.load_images(TESTBACKEND_IMAGE)
        argv = host.command(
            str(BIN / "plane-drone"),
            "--nats", nats_url,
            "--cluster", self.cluster,
            "--ip", host.ip,
            "--proxy-listen", f"{host.ip}:{PROXY_PORT}",
            "--metrics-listen", drone.metrics,
            "--state-dir", str(self.workdir / name),
        )  # fmt: skip
        env = {
            **self.nats_env(f"drone-{name}.creds"),
            "PLANE_DOCKER__SOCKET": str(engine.socket),
            "PLANE_DOCKER__EXTRA_LABELS": msgspec.json.encode({TEST_LABEL: self.test_id}).decode(),
            "PLANE_AGENT__TERMINATE_ON_SHUTDOWN": "true",
            "PLANE_DOCKER__IMAGE_GC": "false",  # the images the bed loaded must stay
            "PLANE_AGENT__HEARTBEAT_SECS": HEARTBEAT_SECS,
        }
        drone.daemon = Daemon(name, argv, env, self.workdir / f"{name}.log")
        await drone.daemon.start()
        await drone.daemon.wait_output(f"drone {name} ready", START_TIMEOUT_SECS)

    async def _answers(self) -> bool | None:
        with contextlib.suppress(PlaneError):
            assert self.plane is not None
            await self.plane.drones()
            return True
        return None

    # --- what a user sees -------------------------------------------------------------------

    async def wait_drone(self, drone_id: str, *, ready: bool, timeout: float = 30) -> None:
        async def listed() -> bool | None:
            assert self.plane is not None
            with contextlib.suppress(PlaneError):
                found = {d.drone_id: d.ready for d in await self.plane.drones()}
                if found.get(drone_id) is ready:
                    return True
            return None

        await until(f"{drone_id} listed as {'ready' if ready else 'not ready'}", timeout, listed)

    async def spawn_ready(self, timeout: float = 60) -> tuple[str, str, float]:
        """Schedule the test image; (backend, drone, seconds from schedule to Ready)."""
        assert self.plane is not None
        started = time.monotonic()
        scheduled = await self.plane.schedule(image=TESTBACKEND_IMAGE, max_idle_secs=600)
        await self.plane.wait_for_state(scheduled.backend_id, BackendState.READY, timeout)
        return scheduled.backend_id, scheduled.drone, time.monotonic() - started

    async def resolve(self, backend: str, controller: int = 0) -> str | None:
        """What the controllers' DNS tells the browser for the backend's hostname."""
        assert self.browser is not None
        dns = self.controllers[controller].dns
        out = await _run(
            self.browser.command(
                "dig", f"@{dns}", "-p", "53", f"{backend}.{self.domain}", "A", "+short",
                "+time=2", "+tries=1",
            )
        )  # fmt: skip
        lines = [line for line in out.splitlines() if line and not line.startswith(";")]
        return lines[0] if lines else None

    async def browse(self, backend: str, address: str, timeout: float = 5) -> tuple[int, str]:
        """The browser's GET of the backend's page at `address` (status 0: no connection)."""
        assert self.browser is not None
        out = await _run(
            self.browser.command(
                "curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}",
                "-H", f"Host: {backend}.{self.cluster}", f"http://{address}:{PROXY_PORT}/",
            ),
            check=False,
        )  # fmt: skip
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    def drone(self, drone_id: str) -> DroneHost:
        return next(d for d in self.drones if d.drone_id == drone_id)

    def tails(self) -> list[tuple[str, str]]:
        logs = [(c.daemon.name, c.daemon.tail()) for c in self.controllers]
        if self.prometheus is not None:
            logs.append(("prometheus", self.prometheus.tail()))
        logs += [(d.daemon.name, d.daemon.tail()) for d in self.drones if d.daemon is not None]
        if self.nats is not None:
            for node in self.nats.nodes:
                text = node.log.read_text(errors="replace") if node.log.exists() else ""
                logs.append((f"nats {node.name}", "\n".join(text.splitlines()[-20:])))
        return logs

    # --- tear-down ---------------------------------------------------------------------------

    async def close(self) -> None:
        if self.plane is not None:
            with contextlib.suppress(Exception):
                await self.plane.close()
        for drone in self.drones:
            if drone.daemon is not None and drone.daemon.running:
                drone.host.heal()
                if drone.daemon.proc is not None:
                    drone.daemon.proc.send_signal(signal.SIGCONT)
                await drone.daemon.stop()
        for controller in self.controllers:
            await controller.daemon.stop()
            await controller.engine.close()
        if self.prometheus is not None:
            await self.prometheus.stop()
        for drone in self.drones:
            await drone.docker.close()
            await drone.engine.close()
        if self.nats is not None:
            await self.nats.stop()
        if self.network is not None:
            self.network.close()


async def _run(argv: list[str], check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    if check and proc.returncode != 0:
        raise BedError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def tools_missing() -> list[str]:
    return [tool for tool in ("ip", "nsenter", "dig", "curl", "openssl") if not shutil.which(tool)]
