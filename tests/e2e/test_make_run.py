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

from tests.e2e.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCAL_LABEL = "dev.plane.local-cluster"
URL_LINE = re.compile(rb"demo backend\s+(http://\S+)")


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


async def test_make_run_serves_the_demo_and_ctrl_c_leaves_nothing(
    docker: aiodocker.Docker,
) -> None:
    nats_port, proxy_port = free_port(), free_port()
    env = {
        **os.environ,
        "PLANE_LOCAL_NATS_PORT": str(nats_port),
        "PLANE_LOCAL_PROXY_PORT": str(proxy_port),
        "PLANE_LOCAL_CONTROLLER_METRICS": f"127.0.0.1:{free_port()}",
        "PLANE_LOCAL_DRONE_METRICS": f"127.0.0.1:{free_port()}",
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
            while url is None:
                line = await proc.stdout.readline()
                assert line, "make run ended before printing a URL:\n" + b"".join(seen).decode()
                seen.append(line)
                if match := URL_LINE.search(line):
                    url = match.group(1).decode()
        host = httpx.URL(url).netloc.decode()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy_port}") as client:
            page = await client.get("/", headers={"Host": host})
        assert page.status_code == 200, page.text
        assert "<html" in page.text.lower()
        labelled = await docker.containers.list(filters={"label": [f"{LOCAL_LABEL}=1"]})
        assert labelled, "the demo backend's container is not running"
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
