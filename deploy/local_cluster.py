"""`make run`: a local cluster on this machine, stopped cleanly with Ctrl-C.

Starts nats-server (JetStream, data under .state/local), one controller, one
drone whose proxy listens on loopback, spawns one demo backend and prints where
everything is. The cluster is named `plane.localhost:PORT`: names under
`.localhost` resolve to this machine in browsers and curl, with no DNS set-up.
Ctrl-C stops every process and removes every container of this cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import aiodocker

from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".state" / "local"
BIN = Path(sys.executable).parent
LABEL = "dev.plane.local-cluster"

NATS_PORT = int(os.environ.get("PLANE_LOCAL_NATS_PORT", "14222"))
PROXY_PORT = int(os.environ.get("PLANE_LOCAL_PROXY_PORT", "9080"))
CONTROLLER_METRICS = os.environ.get("PLANE_LOCAL_CONTROLLER_METRICS", "127.0.0.1:9101")
DRONE_METRICS = os.environ.get("PLANE_LOCAL_DRONE_METRICS", "127.0.0.1:9102")
DEMO_IMAGE = os.environ.get("PLANE_LOCAL_DEMO_IMAGE", "plane-demo:latest")
CLUSTER = f"plane.localhost:{PROXY_PORT}"
NATS_URL = f"nats://127.0.0.1:{NATS_PORT}"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Processes:
    """The cluster's processes, each logging to its own file under .state/local."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        log = (STATE / f"{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        log.close()
        self.procs.append((name, proc))

    def failed(self) -> str | None:
        for name, proc in self.procs:
            if proc.returncode is not None:
                return f"{name} exited with {proc.returncode}; see {STATE / (name + '.log')}"
        return None

    async def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.returncode is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                print(f"  {name} did not stop in 20 s; killing it")
                proc.kill()
                await proc.wait()


async def remove_containers() -> int:
    docker = aiodocker.Docker()
    try:
        containers = await docker.containers.list(all=True, filters={"label": [f"{LABEL}=1"]})
        for container in containers:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
        return len(containers)
    finally:
        await docker.close()


async def wait_for_drone(plane: PlaneClient, procs: Processes, timeout: float = 60) -> str:
    async with asyncio.timeout(timeout):
        while True:
            problem = procs.failed()
            if problem:
                raise RuntimeError(problem)
            with contextlib.suppress(PlaneError):
                ready = [d for d in await plane.drones() if d.ready]
                if ready:
                    return ready[0].drone_id
            await asyncio.sleep(0.2)


async def main() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    busy = [p for p in (NATS_PORT, PROXY_PORT) if not port_free(p)]
    if busy:
        print(f"make run: port(s) {busy} in use; is a local cluster already running?")
        print("  choose others with PLANE_LOCAL_NATS_PORT / PLANE_LOCAL_PROXY_PORT")
        return 1
    await remove_containers()
    procs = Processes()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    common = ["--nats", NATS_URL, "--cluster", CLUSTER]
    try:
        await procs.start(
            "nats",
            str(BIN / "nats-server"),
            "-a", "127.0.0.1", "-p", str(NATS_PORT), "-js", "-sd", str(STATE / "nats"),
        )  # fmt: skip
        await procs.start(
            "controller",
            str(BIN / "plane-controller"),
            *common,
            "--metrics-listen", CONTROLLER_METRICS,
        )  # fmt: skip
        await procs.start(
            "drone",
            str(BIN / "plane-drone"),
            *common,
            "--ip", "127.0.0.1",
            "--proxy-listen", f"127.0.0.1:{PROXY_PORT}",
            "--metrics-listen", DRONE_METRICS,
            "--state-dir", str(STATE / "drone"),
            env={
                "PLANE_AGENT__TERMINATE_ON_SHUTDOWN": "true",
                "PLANE_DOCKER__EXTRA_LABELS": f'{{"{LABEL}": "1"}}',
            },
        )  # fmt: skip
        plane = await connect_when_up(procs)
        async with plane:
            drone = await wait_for_drone(plane, procs)
            backend = await plane.schedule(image=DEMO_IMAGE, max_idle_secs=60)
            await plane.wait_for_state(backend.backend_id, BackendState.READY, timeout=60)
            banner(drone, plane.url(backend.backend_id))
            while not stop.is_set():
                problem = procs.failed()
                if problem:
                    print(f"make run: {problem}")
                    return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
        return 0
    except (PlaneError, RuntimeError, TimeoutError) as exc:
        print(f"make run: {exc or type(exc).__name__}; logs are in {STATE}")
        return 1
    finally:
        print("\nstopping the local cluster ...")
        await procs.stop()
        removed = await remove_containers()
        if removed:
            print(f"  removed {removed} leftover container(s)")
        print("stopped.")


async def connect_when_up(procs: Processes) -> PlaneClient:
    async with asyncio.timeout(30):
        while True:
            problem = procs.failed()
            if problem:
                raise RuntimeError(problem)
            try:
                return await PlaneClient.connect(NATS_URL, CLUSTER, scheme="http", timeout=2)
            except PlaneError:
                await asyncio.sleep(0.2)


def banner(drone: str, url: str) -> None:
    cli = f"{BIN / 'plane'} --nats {NATS_URL} --cluster {CLUSTER} --url-scheme http"
    print(
        f"""
Plane is running locally.

  NATS           {NATS_URL}
  demo backend   {url}
                 (open it in two browser tabs: they share one live document;
                  it stops {60} s after the last tab closes)
  drone          {drone}, proxy on 127.0.0.1:{PROXY_PORT}
  metrics        http://{CONTROLLER_METRICS}/metrics (controller)
                 http://{DRONE_METRICS}/metrics (drone)
  logs           {STATE}/{{nats,controller,drone}}.log

Try next (in another terminal):
  {cli} drones
  {cli} spawn {DEMO_IMAGE} --wait
  {cli} backends
  {cli} status BACKEND --follow
  {cli} logs BACKEND
  {cli} terminate BACKEND

Press Ctrl-C to stop everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
