"""`make run`: a local cluster on this machine, stopped cleanly with Ctrl-C.

Starts nats-server (JetStream, data under .state/local), one controller, one
drone whose proxy listens on loopback, spawns one demo backend and prints where
everything is. The cluster is named `plane.localhost:PORT`: names under
`.localhost` resolve to this machine in browsers and curl, with no DNS set-up.
When the demo backend is swept (no tab open for its max_idle_secs), a new one
is spawned and its URL printed, so there is always one to open. Ctrl-C, at any
moment, stops every process and removes every container of this cluster.

`PLANE_LOCAL_AUTH=1 make run` runs it with least privilege on NATS: fresh
`plane auth` users and credentials under .state/local/auth on every start,
each process with its role's, and the banner names the client's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

import aiodocker

from shared import authconf
from shared.bus import NatsSettings
from shared.client import PlaneClient, PlaneError
from shared.protocol import BackendState, BackendStateMessage

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".state" / "local"
BIN = Path(sys.executable).parent
LABEL = "dev.plane.local-cluster"

NATS_PORT = int(os.environ.get("PLANE_LOCAL_NATS_PORT", "14222"))
PROXY_PORT = int(os.environ.get("PLANE_LOCAL_PROXY_PORT", "9080"))
CONTROLLER_METRICS = os.environ.get("PLANE_LOCAL_CONTROLLER_METRICS", "127.0.0.1:9101")
DRONE_METRICS = os.environ.get("PLANE_LOCAL_DRONE_METRICS", "127.0.0.1:9102")
DEMO_IMAGE = os.environ.get("PLANE_LOCAL_DEMO_IMAGE", "plane-demo:latest")
DEMO_MAX_IDLE_SECS = 60
CLUSTER = f"plane.localhost:{PROXY_PORT}"
NATS_URL = f"nats://127.0.0.1:{NATS_PORT}"
AUTH = STATE / "auth" if os.environ.get("PLANE_LOCAL_AUTH", "") not in ("", "0") else None
LOCAL_DRONE = "local"


def creds(role: str) -> dict[str, str]:
    """The environment that gives a process `role`'s credentials (none without auth)."""
    if AUTH is None:
        return {}
    name = authconf.creds_name("drone", LOCAL_DRONE) if role == "drone" else f"{role}.creds"
    return {"PLANE_NATS__CREDENTIALS_FILE": str(AUTH / name)}


def make_auth() -> list[str]:
    """Fresh users and credentials; the nats-server arguments that take them."""
    if AUTH is None:
        return []
    shutil.rmtree(AUTH, ignore_errors=True)
    authconf.init(AUTH, CLUSTER)
    authconf.add_drone(AUTH, LOCAL_DRONE)
    config = STATE / "nats-server.conf"
    config.write_text(f"include auth/{authconf.CONF_FILE}\n")  # relative to this file
    return ["-c", str(config)]


def port_free(address: str) -> bool:
    """Can `HOST:PORT` be bound now?"""
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "127.0.0.1", int(port)))
        except (OSError, ValueError):
            return False
    return True


class Processes:
    """The cluster's processes, each logging to its own file under .state/local."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        with (STATE / f"{name}.log").open("ab") as log:
            log.write(f"==== make run, {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
            )
        self.procs.append((name, proc))

    def failed(self) -> str | None:
        for name, proc in self.procs:
            if proc.returncode is not None:
                return f"{name} exited with {proc.returncode}; see {STATE / (name + '.log')}"
        return None

    async def watch(self) -> str:
        """Return when one of the processes has exited, saying which."""
        while True:
            problem = self.failed()
            if problem:
                return problem
            await asyncio.sleep(0.5)

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
    addresses = [f"127.0.0.1:{NATS_PORT}", f"127.0.0.1:{PROXY_PORT}"]
    busy = [a for a in [*addresses, CONTROLLER_METRICS, DRONE_METRICS] if not port_free(a)]
    if busy:
        print(f"make run: {', '.join(busy)} in use; is a local cluster already running?")
        print("  choose others with PLANE_LOCAL_NATS_PORT, PLANE_LOCAL_PROXY_PORT,")
        print("  PLANE_LOCAL_CONTROLLER_METRICS and PLANE_LOCAL_DRONE_METRICS")
        return 1
    await remove_containers()
    procs = Processes()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = {
        asyncio.create_task(run(procs), name="cluster"),
        asyncio.create_task(procs.watch(), name="processes"),
        asyncio.create_task(stop.wait(), name="ctrl-c"),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finished = done.pop()
        if finished.get_name() == "ctrl-c":
            return 0
        print(f"make run: {finished.result()}")  # a process exited, or raises
        return 1
    except (PlaneError, RuntimeError, TimeoutError) as exc:
        print(f"make run: {exc or type(exc).__name__}; logs are in {STATE}")
        return 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print("\nstopping the local cluster ...")
        await procs.stop()
        removed = await remove_containers()
        if removed:
            print(f"  removed {removed} leftover container(s)")
        print("stopped.")


async def run(procs: Processes) -> NoReturn:
    """Start the processes, then keep a demo backend up until cancelled."""
    common = ["--nats", NATS_URL, "--cluster", CLUSTER]
    await procs.start(
        "nats",
        str(BIN / "nats-server"),
        *make_auth(),
        "-a", "127.0.0.1", "-p", str(NATS_PORT), "-js", "-sd", str(STATE / "nats"),
    )  # fmt: skip
    await procs.start(
        "controller",
        str(BIN / "plane-controller"),
        *common,
        "--metrics-listen", CONTROLLER_METRICS,
        env=creds("controller"),
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
            "PLANE_DOCKER__IMAGE_GC": "false",  # a local trial leaves this machine's images be
            "PLANE_DOCKER__EXTRA_LABELS": f'{{"{LABEL}": "1"}}',
            **creds("drone"),
        },
    )  # fmt: skip
    plane = await connect_when_up(procs)
    async with plane:
        drone = await wait_for_drone(plane, procs)
        backend_id = await spawn_demo(plane)
        banner(drone, plane.url(backend_id))
        while True:
            end = await last_state(plane, backend_id)
            if end.state != BackendState.SWEPT:
                print(
                    f"The demo backend {backend_id} ended as {end.state.value}; "
                    f"start another with `plane spawn {DEMO_IMAGE} --wait`.",
                    flush=True,
                )
                await asyncio.Event().wait()  # the cluster stays up for Ctrl-C
            backend_id = await spawn_demo(plane)
            print(
                f"The demo backend was swept: no tab was open for {DEMO_MAX_IDLE_SECS} s.\n"
                f"  A new one, with its own URL:  {plane.url(backend_id)}",
                flush=True,
            )


async def spawn_demo(plane: PlaneClient) -> str:
    backend = await plane.schedule(image=DEMO_IMAGE, max_idle_secs=DEMO_MAX_IDLE_SECS)
    await plane.wait_for_state(backend.backend_id, BackendState.READY, timeout=60)
    return backend.backend_id


async def last_state(plane: PlaneClient, backend_id: str) -> BackendStateMessage:
    """Wait for the backend's terminal state."""
    async for message in plane.watch_states(backend_id):
        if message.state.terminal:
            return message
    raise PlaneError(f"the state stream of backend {backend_id} ended")


async def connect_when_up(procs: Processes) -> PlaneClient:
    async with asyncio.timeout(30):
        while True:
            problem = procs.failed()
            if problem:
                raise RuntimeError(problem)
            try:
                settings = NatsSettings(
                    servers=[NATS_URL],
                    credentials_file=creds("client").get("PLANE_NATS__CREDENTIALS_FILE"),
                )
                return await PlaneClient.connect(settings, CLUSTER, scheme="http", timeout=2)
            except PlaneError:
                await asyncio.sleep(0.2)


def banner(drone: str, url: str) -> None:
    cli = f"{BIN / 'plane'} --nats {NATS_URL} --cluster {CLUSTER} --url-scheme http"
    auth = ""
    if AUTH is not None:
        client = AUTH / "client.creds"
        cli += f" --creds {client}"
        auth = (
            f"  credentials    client: {client}\n"
            f"                 admin (drain): {AUTH / 'admin.creds'}\n"
            "                 (least privilege on NATS: each process has its role's)\n"
        )
    print(
        f"""
Plane is running locally.

  NATS           {NATS_URL}
  demo backend   {url}
                 (open it in two browser tabs: they share one live document;
                  it stops {DEMO_MAX_IDLE_SECS} s after the last tab closes, and a new
                  one, with a new URL, is started and printed here)
  drone          {drone}, proxy on 127.0.0.1:{PROXY_PORT}
  metrics        http://{CONTROLLER_METRICS}/metrics (controller)
                 http://{DRONE_METRICS}/metrics (drone)
  logs           {STATE}/{{nats,controller,drone}}.log
{auth}
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
