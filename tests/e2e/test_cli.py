"""The `plane` command as a user types it, against a running cluster."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.cluster import IMAGE, Cluster, free_port

pytestmark = pytest.mark.timeout(90)

PLANE = str(Path(sys.executable).parent / "plane")


async def run_plane(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PLANE,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def plane_ok(cluster: Cluster, *args: str) -> str:
    """Run `plane` against the cluster; it must succeed and say nothing on stderr."""
    flags = ["--nats", cluster.nats.url, "--cluster", cluster.name, "--url-scheme", "http"]
    code, out, err = await run_plane(*flags, *args)
    assert (code, err) == (0, ""), f"plane {' '.join(args)} exited {code}: {err}"
    return out


async def plane_fails(cluster: Cluster, *args: str) -> str:
    """Run `plane`; it must exit non-zero with one line on stderr, which is returned."""
    flags = ["--nats", cluster.nats.url, "--cluster", cluster.name]
    code, out, err = await run_plane(*flags, *args)
    assert code != 0, f"plane {' '.join(args)} succeeded: {out}"
    assert err.startswith("plane: ") and err.count("\n") == 1, err
    return err


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


async def test_spawn_status_logs_terminate(cluster: Cluster) -> None:
    out = await plane_ok(cluster, "spawn", IMAGE, "--wait")
    lines = out.splitlines()
    first, *states, last = lines
    assert first.startswith("backend ") and f"on drone {cluster.drones[0].drone_id}" in first
    backend = first.split()[1]
    assert [line.split()[-1] for line in states] == ["Loading", "Starting", "Ready"]
    url = f"http://{cluster.host(backend)}/"
    assert last == f"ready: {url}"
    page = await cluster.get(cluster.drones[0], backend, urlsplit(url).path)
    assert page.text == "hello from testbackend\n"

    status = await plane_ok(cluster, "status", backend)
    assert status.startswith(f"{backend}  Ready  ")
    assert status.rstrip().endswith(f"on {cluster.drones[0].drone_id}")
    [stored] = json_lines(await plane_ok(cluster, "--json", "status", backend))
    assert (stored["backend"], stored["state"]) == (backend, "Ready")
    listing = await plane_ok(cluster, "backends")
    assert f"{backend}  Ready" in listing

    logs = (await plane_ok(cluster, "logs", backend)).splitlines()
    assert "[stdout] testbackend starting pid=1" in logs
    assert "[stderr] testbackend stderr hello" in logs
    kinds = {(line["backend_id"], line["kind"]) for line in json_lines(
        await plane_ok(cluster, "--json", "logs", backend)
    )}  # fmt: skip
    assert kinds == {(backend, "Stdout"), (backend, "Stderr")}

    said = await plane_ok(cluster, "terminate", backend)
    assert said == f"backend {backend} terminated\n"
    ends = await plane_ok(cluster, "status", backend, "--follow")
    assert ends.splitlines()[-1].startswith(f"{backend}  Terminated  ")
    page = await cluster.get(cluster.drones[0], backend)
    assert page.status_code == 404


async def test_json_output_parses(cluster: Cluster) -> None:
    events = json_lines(await plane_ok(cluster, "--json", "spawn", IMAGE, "--wait"))
    assert [e["event"] for e in events] == ["scheduled", "state", "state", "state", "ready"]
    backend = str(events[0]["backend_id"])
    assert events[0]["drone"] == cluster.drones[0].drone_id
    assert [e["state"] for e in events[1:4]] == ["Loading", "Starting", "Ready"]
    assert events[-1]["url"] == events[0]["url"] == f"http://{cluster.host(backend)}/"

    [drones] = json_lines(await plane_ok(cluster, "--json", "drones"))
    assert isinstance(drones, list)
    assert [(d["drone_id"], d["ready"]) for d in drones] == [(cluster.drones[0].drone_id, True)]
    [backends] = json_lines(await plane_ok(cluster, "--json", "backends"))
    assert isinstance(backends, list)
    assert [(b["backend_id"], b["state"]) for b in backends] == [(backend, "Ready")]

    assert json_lines(await plane_ok(cluster, "--json", "terminate", backend)) == [
        {"terminated": backend}
    ]
    follow = json_lines(await plane_ok(cluster, "--json", "status", backend, "--follow"))
    assert [m["state"] for m in follow][-1] == "Terminated"


async def test_spawn_with_a_lock_gets_or_creates_and_fetch_finds_it(cluster: Cluster) -> None:
    lock = "doc:42/room_1"
    assert await plane_fails(cluster, "fetch", lock) == f"plane: no backend holds lock {lock}\n"
    first, second = await asyncio.gather(
        plane_ok(cluster, "--json", "spawn", IMAGE, "--lock", lock, "--wait"),
        plane_ok(cluster, "--json", "spawn", IMAGE, "--lock", lock, "--wait"),
    )
    made, found = json_lines(first)[0], json_lines(second)[0]
    assert made["backend_id"] == found["backend_id"]
    assert sorted([made["spawned"], found["spawned"]]) == [False, True]
    backend = str(made["backend_id"])
    assert json_lines(first)[-1]["event"] == json_lines(second)[-1]["event"] == "ready"
    page = await cluster.get(cluster.drones[0], backend)
    assert page.text == "hello from testbackend\n"

    said = await plane_ok(cluster, "fetch", lock)
    assert said.startswith(f"backend {backend} holds lock {lock}, on drone ")
    await plane_ok(cluster, "terminate", backend)
    await plane_ok(cluster, "status", backend, "--follow")
    assert await plane_fails(cluster, "fetch", lock) == f"plane: no backend holds lock {lock}\n"


async def test_spawn_with_a_bearer_token_prints_the_token_the_proxy_wants(
    cluster: Cluster,
) -> None:
    out = await plane_ok(cluster, "spawn", IMAGE, "--bearer-token", "--wait")
    backend = out.split()[1]
    [token] = [line.split(": ")[1] for line in out.splitlines() if line.startswith("bearer token")]
    assert len(token) == 30 and token.isalnum()
    drone = cluster.drones[0]

    async def status_with(headers: dict[str, str], path: str = "/") -> int:
        return (await cluster.get(drone, backend, path, headers)).status_code

    assert await status_with({}) == 401
    assert await status_with({"Authorization": "Bearer " + "x" * 30}) == 403
    assert await status_with({"Authorization": f"Bearer {token}"}) == 200
    login = await cluster.get(drone, backend, f"/_plane_auth?token={token}&redirect=/after")
    assert (login.status_code, login.headers["location"]) == (302, "/after")
    cookie = login.headers["set-cookie"].split(";")[0]
    assert cookie == f"_plane_auth={token}"
    assert await status_with({"Cookie": cookie}, "/after") == 200


async def test_failures_are_one_line_and_nonzero(cluster: Cluster) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    code, out, err = await run_plane("--nats", nowhere, "--cluster", cluster.name, "drones")
    assert code != 0 and out == ""
    assert err.startswith("plane: cannot reach NATS") and err.count("\n") == 1, err

    err = await plane_fails(cluster, "status", "no-such-backend")
    assert "no-such-backend" in err
    err = await plane_fails(
        cluster, "spawn", "plane-no-such-image:latest", "--pull-policy", "Never", "--wait"
    )
    assert "ErrorLoading" in err
    err = await plane_fails(cluster, "spawn", IMAGE, "--backend-id", "Not_A_Label")
    assert "backend_id" in err
