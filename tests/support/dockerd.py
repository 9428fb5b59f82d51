"""A Docker engine of the test's own: its own dockerd, data, state, socket and bridge.

Beside the machine's engine, so that a test may stop and restart "the host's
Docker" without touching anything else. The engine gets a bridge that the
test creates, on an address range that only these tests use
(10.213.0.0/16, one /24 each), with no NAT and no iptables rules: its
containers reach and are reached from this host only. Images are copied in
from the machine's engine (`docker save | docker load`). Everything is
removed on `close`, the data included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.netns import Host
from tests.support.processes import terminate

START_TIMEOUT_SECS = 60.0
SUBNET_PREFIX = "10.213"


class DockerdError(RuntimeError):
    pass


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


class PrivateDockerd:
    def __init__(self, on: Host | None = None) -> None:
        """`on`: run it on a simulated host (its bridge in that host's namespace)."""
        self.on = on
        if os.geteuid() != 0:
            raise DockerdError("a private Docker engine needs root (CI runs the suite as root)")
        if shutil.which("dockerd") is None:
            raise DockerdError("dockerd not found: run `make docker` (deploy/ensure-docker.sh)")
        # Short paths: unix socket paths (ours and containerd's inside) are limited to 108 bytes.
        self.base = Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp"))
        self.socket = self.base / "docker.sock"
        self.bridge = f"pd{self.base.name[-8:].replace('_', '')}"[:15]
        self.subnet = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.log = self.base / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def _ip(self, *argv: str) -> subprocess.CompletedProcess[str]:
        namespace = ("-n", self.on.namespace) if self.on is not None else ()
        return _run("ip", *namespace, *argv)

    def _make_bridge(self) -> None:
        taken = self._ip("-4", "route").stdout
        for _ in range(50):
            third = random.randrange(1, 255)
            if f"{SUBNET_PREFIX}.{third}.0/24" not in taken:
                break
        else:
            raise DockerdError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")
        self.subnet = f"{SUBNET_PREFIX}.{third}.0/24"
        for argv in (
            ("link", "add", self.bridge, "type", "bridge"),
            ("addr", "add", f"{SUBNET_PREFIX}.{third}.1/24", "dev", self.bridge),
            ("link", "set", self.bridge, "up"),
        ):
            result = self._ip(*argv)
            if result.returncode != 0:
                raise DockerdError(f"ip {' '.join(argv)}: {result.stderr.strip()}")

    async def start(self) -> PrivateDockerd:
        if not self.subnet:
            self._make_bridge()
        out = self.log.open("ab")
        try:
            prefix = self.on.command() if self.on is not None else []
            self.proc = await asyncio.create_subprocess_exec(
                *prefix,
                "dockerd",
                "--data-root", str(self.base / "data"),
                "--exec-root", str(self.base / "exec"),
                "--pidfile", str(self.base / "dockerd.pid"),
                "--host", self.host,
                "--bridge", self.bridge,
                "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        finally:
            out.close()
        await self.wait_ready()
        return self

    async def wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECS
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                raise DockerdError(f"dockerd exited:\n{self.tail()}")
            probe = await asyncio.create_subprocess_exec(
                "docker", "--host", self.host, "version", "--format", "{{.Server.Version}}",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            if await probe.wait() == 0:
                return
            if loop.time() > deadline:
                raise DockerdError(f"dockerd did not answer within {START_TIMEOUT_SECS:g}s")
            await asyncio.sleep(0.1)

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def load_images(self, *images: str) -> None:
        """Copy images from the machine's engine into this one."""
        for image in images:
            command = f"docker save {image} | docker --host {self.host} load"
            result = await asyncio.to_thread(
                subprocess.run, ["bash", "-o", "pipefail", "-c", command],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise DockerdError(f"{command}: {result.stderr.strip()}")

    async def stop(self) -> None:
        """Stop the engine as a host's service manager would (its containers die with it)."""
        if self.proc is not None:
            await terminate(self.proc, grace=30)
            self.proc = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(Exception):
            self._ip("link", "del", self.bridge)
        # Whatever dockerd left mounted under its roots goes before the files do.
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.base))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", mount)
        shutil.rmtree(self.base, ignore_errors=True)
