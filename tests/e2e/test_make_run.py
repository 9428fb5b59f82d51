"""`make run` as a user runs it: the printed URL answers through the drone's
proxy, and Ctrl-C leaves no process and no container of the local cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import aiodocker
import httpx
import pytest

from shared.bus import NatsSettings
from shared.client import PlaneClient, Unavailable
from tests.e2e.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCAL_LABEL = "dev.plane.local-cluster"
URL_LINE = re.compile(rb"demo backend\s+(http://\S+)")
CREDS_LINE = re.compile(rb"credentials\s+client: (\S+)")


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (this process excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                found.append(int(entry.name))
    return found


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.mark.parametrize("auth", [False, True], ids=["open", "least-privilege"])
async def test_make_run_serves_the_demo_and_ctrl_c_leaves_nothing(
    docker: aiodocker.Docker, auth: bool
) -> None:
    nats_port, proxy_port = free_port(), free_port()
    env = {
        **os.environ,
        "PLANE_LOCAL_NATS_PORT": str(nats_port),
        "PLANE_LOCAL_PROXY_PORT": str(proxy_port),
        "PLANE_LOCAL_CONTROLLER_METRICS": f"127.0.0.1:{free_port()}",
        "PLANE_LOCAL_DRONE_METRICS": f"127.0.0.1:{free_port()}",
        "PLANE_LOCAL_AUTH": "1" if auth else "",
    }
    proc = await asyncio.create_subprocess_exec(
        "make", "--no-print-directory", "run",
        cwd=ROOT, env=env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[bytes] = []
    try:
        url = None
        async with asyncio.timeout(240):
            while not seen or b"Press Ctrl-C" not in seen[-1]:  # the whole banner
                line = await proc.stdout.readline()
                assert line, "make run ended before its banner:\n" + b"".join(seen).decode()
                seen.append(line)
                if match := URL_LINE.search(line):
                    url = match.group(1).decode()
        assert url is not None, b"".join(seen).decode()
        host = httpx.URL(url).netloc.decode()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy_port}") as client:
            page = await client.get("/", headers={"Host": host})
        assert page.status_code == 200, page.text
        assert "<html" in page.text.lower()
        labelled = await docker.containers.list(filters={"label": [f"{LOCAL_LABEL}=1"]})
        assert labelled, "the demo backend's container is not running"
        if auth:
            await the_printed_credentials_work_and_nothing_else_does(seen, nats_port, proxy_port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        async with asyncio.timeout(90):
            rest = await proc.stdout.read()
            await proc.wait()
    output = (b"".join(seen) + rest).decode()
    assert b"stopped." in rest, output
    assert not await port_open(nats_port), output
    assert not await port_open(proxy_port), output
    assert processes_mentioning(f"127.0.0.1:{proxy_port}") == [], output
    assert processes_mentioning(f"127.0.0.1:{nats_port}") == [], output  # controller, drone
    assert processes_mentioning(f"-p {nats_port} ") == [], output  # nats-server
    left = await docker.containers.list(all=True, filters={"label": [f"{LOCAL_LABEL}=1"]})
    assert left == [], output


async def the_printed_credentials_work_and_nothing_else_does(
    banner: list[bytes], nats_port: int, proxy_port: int
) -> None:
    match = next((m for line in banner if (m := CREDS_LINE.search(line))), None)
    assert match is not None, "no client credentials in the banner"
    client = Path(match.group(1).decode())
    url = f"nats://127.0.0.1:{nats_port}"
    cluster = f"plane.localhost:{proxy_port}"
    with_creds = NatsSettings(servers=[url], credentials_file=str(client))
    async with await PlaneClient.connect(with_creds, cluster, timeout=5) as plane:
        assert [(d.drone_id, d.ready) for d in await plane.drones()] == [("local", True)]
    with pytest.raises(Unavailable):  # without credentials, no entry
        await PlaneClient.connect(url, cluster, timeout=5)
