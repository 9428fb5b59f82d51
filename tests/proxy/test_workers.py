"""The proxy in two processes sharing one port: connections spread over both,
routes reach both, activity adds up across them, a killed worker comes back,
workers follow the drone process out, and stop lets requests finish everywhere.
Real worker processes, real test-backend containers."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from websockets.asyncio.client import ClientConnection

from drone.config import DroneSettings, ProxySettings
from drone.proxy.fleet import WorkerFleet, WorkerOptions, WorkerState
from drone.proxy.server import ProxyServer
from drone.routes import ActivityTracker, RouteTable
from drone.service import Drone, DroneError
from shared.config import ConfigError
from tests.proxy.conftest import (
    CLUSTER,
    MakeProxy,
    Proxy,
    StartBackend,
    assert_not_accepting,
    raw_request,
    ws_connect,
)
from tests.proxy.test_tls import LiveCertificates, get, open_tls

QUICK = WorkerOptions(report_secs=0.1, restart_min_secs=0.1)


async def two_processes(make_proxy: MakeProxy, **overrides: object) -> tuple[Proxy, WorkerFleet]:
    proxy = await make_proxy(workers=2, worker_options=QUICK, **overrides)
    fleet = proxy.server.fleet
    assert fleet is not None
    assert [worker.state for worker in fleet.workers] == [WorkerState.RUNNING]
    return proxy, fleet


async def status_on_a_fresh_connection(proxy: Proxy, backend_id: str, path: str = "/") -> int:
    """A new socket each time, so the kernel picks a process for each request."""
    request = f"GET {path} HTTP/1.1\r\nHost: {proxy.host(backend_id)}\r\nConnection: close\r\n\r\n"
    answer = await raw_request(proxy.port, request.encode())
    return int(answer.split(b" ", 2)[1])


def served(fleet: WorkerFleet, index: int) -> int:
    """2xx responses process `index` has counted (0: the drone process; others: as reported)."""
    counters = fleet.counters(index)
    return counters.responses[2] if counters is not None else 0


def busy_in_worker(fleet: WorkerFleet, backend_id: str) -> bool:
    return backend_id in fleet.workers[0].activity.busy


async def websocket_on(
    proxy: Proxy, fleet: WorkerFleet, backend_id: str, index: int
) -> ClientConnection:
    """A WebSocket to the backend that the kernel gave to process `index`."""
    for _ in range(40):
        ws = await ws_connect(proxy, backend_id)
        await proxy.activity.wait_for(lambda: proxy.activity.active(backend_id) >= 1)
        if busy_in_worker(fleet, backend_id) == (index == 1):
            return ws
        await ws.close()
        await proxy.activity.wait_for(lambda: proxy.activity.active(backend_id) == 0)
    raise AssertionError(f"40 WebSockets and none went to process {index}")


async def echo(ws: ClientConnection, message: str) -> str | bytes:
    await ws.send(message)
    return await asyncio.wait_for(ws.recv(), 10)


def metric(proxy: Proxy, line_start: str) -> float:
    for line in generate_latest(proxy.registry).decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {line_start} in /metrics")


async def test_connections_spread_over_both_processes_and_metrics_add_up(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy, fleet = await two_processes(make_proxy)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)  # after the start
    await fleet.synced()
    statuses = await asyncio.gather(
        *(status_on_a_fresh_connection(proxy, backend.id) for _ in range(48))
    )
    assert statuses == [200] * 48
    await fleet.wait_until(lambda: served(fleet, 0) + served(fleet, 1) == 48)
    assert served(fleet, 0) > 0, "the drone process served nothing"
    assert served(fleet, 1) > 0, "the worker process served nothing"
    assert metric(proxy, 'plane_proxy_requests_total{status_class="2xx"}') == 48
    assert metric(proxy, "plane_proxy_processes") == 2
    await fleet.wait_until(lambda: not busy_in_worker(fleet, backend.id))
    assert proxy.activity.active(backend.id) == 0
    assert proxy.activity.idle_since(backend.id) is not None


async def test_a_route_set_after_start_holds_and_releases_requests_in_both(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy, fleet = await two_processes(make_proxy)
    backend = await start_backend()
    proxy.routes.set_pending("later")
    await fleet.synced()
    requests = [
        asyncio.create_task(status_on_a_fresh_connection(proxy, "later")) for _ in range(24)
    ]
    # Held in both: the worker counts once on the drone's tracker, so 2 means one here too.
    await proxy.activity.wait_for(
        lambda: busy_in_worker(fleet, "later") and proxy.activity.active("later") >= 2
    )
    assert not any(request.done() for request in requests)
    proxy.routes.set_ready("later", backend.ip, backend.port, None)
    assert await asyncio.wait_for(asyncio.gather(*requests), 15) == [200] * 24
    await proxy.activity.wait_for(lambda: proxy.activity.active("later") == 0)
    proxy.routes.remove("later")
    await fleet.synced()
    assert {await status_on_a_fresh_connection(proxy, "later") for _ in range(16)} == {404}


@pytest.mark.parametrize("holder", [0, 1], ids=["websocket-in-drone", "websocket-in-worker"])
async def test_a_websocket_in_one_process_keeps_the_backend_busy_while_the_other_idles(
    make_proxy: MakeProxy, start_backend: StartBackend, holder: int
) -> None:
    proxy, fleet = await two_processes(make_proxy)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    proxy.activity.track(backend.id)
    await fleet.synced()
    other = 1 - holder
    ws = await websocket_on(proxy, fleet, backend.id, holder)
    try:
        statuses = [await status_on_a_fresh_connection(proxy, backend.id) for _ in range(24)]
        assert statuses == [200] * 24
        await fleet.wait_until(lambda: served(fleet, 0) + served(fleet, 1) == 24)
        assert served(fleet, other) > 0, f"process {other} served nothing"
        # the other process is idle again...
        if other == 1:
            await fleet.wait_until(lambda: not busy_in_worker(fleet, backend.id))
        else:
            assert proxy.activity.active(backend.id) == 1  # only the worker's hold is left
        # ...and the backend is still busy
        assert proxy.activity.active(backend.id) == 1
        assert proxy.activity.idle_since(backend.id) is None
        assert await echo(ws, "still here") == "still here"
    finally:
        await ws.close()
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
    assert proxy.activity.idle_since(backend.id) is not None
    assert not busy_in_worker(fleet, backend.id)


async def test_a_killed_worker_is_started_again_with_every_route(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy, fleet = await two_processes(make_proxy)
    worker = fleet.workers[0]
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    proxy.activity.track(backend.id)
    await fleet.synced()
    ws = await websocket_on(proxy, fleet, backend.id, 1)
    killed = worker.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    # what the dead worker held ends with it
    await proxy.activity.wait_for(lambda: proxy.activity.active(backend.id) == 0)
    assert proxy.activity.idle_since(backend.id) is not None
    proxy.routes.set_ready("added", backend.ip, backend.port, None)  # while it is down
    await fleet.wait_until(
        lambda: worker.state is WorkerState.RUNNING and worker.pid != killed, timeout=30
    )
    await ws.close()
    assert metric(proxy, "plane_proxy_worker_restarts_total") == 1
    assert metric(proxy, "plane_proxy_processes") == 2
    statuses = await asyncio.gather(
        *(status_on_a_fresh_connection(proxy, name) for name in [backend.id, "added"] * 24)
    )
    assert statuses == [200] * 48
    await fleet.wait_until(lambda: served(fleet, 1) > 0)  # the new worker serves both


async def test_every_process_serves_https_and_reloads_the_certificate(
    make_proxy: MakeProxy, start_backend: StartBackend, tmp_path: Path
) -> None:
    certs = LiveCertificates(tmp_path)
    proxy, fleet = await two_processes(
        make_proxy,
        tls_cert_file=str(certs.live_cert),
        tls_key_file=str(certs.live_key),
        tls_reload_interval_secs=0.1,
    )
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    await fleet.synced()

    async def fetch(cert: Path) -> int:
        reader, writer = await open_tls(proxy, backend.id, cert)
        try:
            return (await get(reader, writer, proxy.host(backend.id), "/"))[0]
        finally:
            writer.close()

    assert await asyncio.gather(*(fetch(certs.old_cert) for _ in range(24))) == [200] * 24
    await fleet.wait_until(lambda: served(fleet, 0) + served(fleet, 1) == 24)
    assert served(fleet, 0) > 0 and served(fleet, 1) > 0
    certs.swap()
    # Each process polls the files on its own: until both do, some handshakes fail.
    deadline = time.monotonic() + 10
    while True:
        results = await asyncio.gather(
            *(fetch(certs.new_cert) for _ in range(24)), return_exceptions=True
        )
        if not any(isinstance(result, ssl.SSLCertVerificationError) for result in results):
            break
        assert time.monotonic() < deadline, "some process never served the new certificate"
        await asyncio.sleep(0.05)
    assert results == [200] * 24


PARENT = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from drone.config import ProxySettings
from drone.proxy.server import ProxyServer
from drone.routes import ActivityTracker, RouteTable

async def main():
    server = ProxyServer(
        ProxySettings(listen="127.0.0.1:0", workers=2), "plane.test",
        RouteTable(), ActivityTracker(), CollectorRegistry(),
    )
    await server.start()
    print(server.fleet.workers[0].pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def exited(pidfd: int, timeout: float) -> None:
    """Wait until the process behind `pidfd` has ended (a pidfd turns readable then)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(pidfd)


async def test_workers_stop_when_the_drone_process_dies(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert parent.stdout is not None and parent.stderr is not None
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 30)
        pidfd = os.pidfd_open(int(line))
    finally:
        parent.kill()
        await parent.wait()
    try:
        await exited(pidfd, 30)
    finally:
        os.close(pidfd)
    # The worker shared the parent's stderr, so that reaches its end now too.
    logged = await asyncio.wait_for(parent.stderr.read(), 10)
    assert b"the drone process is gone; stopping" in logged


async def test_stop_lets_requests_in_flight_finish_in_every_process(
    make_proxy: MakeProxy, start_backend: StartBackend
) -> None:
    proxy, fleet = await two_processes(make_proxy)
    backend = await start_backend()
    proxy.routes.set_ready(backend.id, backend.ip, backend.port, None)
    await fleet.synced()
    # Each request is held 3 s by the backend, so that all 16 are open at once.
    requests = [
        asyncio.create_task(status_on_a_fresh_connection(proxy, backend.id, "/sleep/3000"))
        for _ in range(16)
    ]

    def open_connections() -> tuple[int, int]:
        reported = fleet.counters(1)
        there = reported.client_connections if reported is not None else 0
        return proxy.server.metrics.client_connections, there

    # Not fleet.wait_until: it looks again only when a worker reports, and a worker
    # reports only when its own counters change, so this process's last connection
    # would go unseen if it came after the worker's last one.
    try:
        async with asyncio.timeout(10):
            while sum(open_connections()) != 16:  # noqa: ASYNC110 (two processes: nothing to await)
                await asyncio.sleep(0.01)
    except TimeoutError:
        ended = [task.exception() or task.result() for task in requests if task.done()]
        raise AssertionError(f"open (here, worker): {open_connections()}; ended: {ended}") from None
    assert busy_in_worker(fleet, backend.id) and proxy.activity.active(backend.id) >= 2
    await proxy.server.stop(grace=10)
    assert await asyncio.gather(*requests) == [200] * 16
    process = fleet.workers[0].process
    assert process is not None and process.returncode == 0
    assert fleet.workers[0].state is WorkerState.STOPPED
    assert proxy.activity.active(backend.id) == 0
    assert metric(proxy, 'plane_proxy_requests_total{status_class="2xx"}') == 16
    await assert_not_accepting(proxy.port)


def test_a_bad_workers_setting_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"proxy\.workers"):
        ProxyServer(
            ProxySettings(workers=-1),
            CLUSTER,
            RouteTable(),
            ActivityTracker(),
            CollectorRegistry(),
        )
    with pytest.raises(DroneError, match=r"proxy\.workers"):
        Drone(DroneSettings(state_dir=str(tmp_path), proxy=ProxySettings(workers=999)))


async def test_a_worker_that_cannot_start_fails_the_start(
    make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a process that exits at once
    with pytest.raises(OSError, match="proxy worker 1: exited before it listened"):
        await make_proxy(workers=2, worker_options=QUICK)
