"""Start Debian's nginx as a fixed-body upstream or as a reverse proxy."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

from tests.bench.services import Proc, pinned


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_COMMON = """
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; multi_accept on; }}
worker_rlimit_nofile 40000;
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  {body}
}}
"""

UPSTREAM = """
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type text/plain; return 200 "hello from upstream\\n"; }}
  }}
"""

PROXY = """
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://{target};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_buffer_size 64k;
      proxy_buffers 4 64k;
      proxy_read_timeout 3600s;
    }}
  }}
"""


class Nginx:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, workdir: Path) -> None:
        self.proc = proc
        self.port = port
        self.workdir = workdir

    @classmethod
    async def start(
        cls,
        workdir: Path,
        body: str,
        port: int,
        workers: int = 1,
        cpus: frozenset[int] | None = None,
    ) -> Nginx:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed: run `make bench` (it installs nginx-light)")
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(_COMMON.format(workers=workers, dir=workdir, body=body))
        argv = pinned(cpus, ["nginx", "-c", str(conf), "-p", str(workdir)])
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        server = cls(proc, port, workdir)
        await server.wait_listening()
        return server

    async def wait_listening(self, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    log = self.workdir / "error.log"
                    said = log.read_text(errors="replace")[-1000:] if log.exists() else ""
                    raise RuntimeError(f"nginx exited at start-up: {said}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return
                except OSError:
                    await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await Proc(self.proc).stop()


async def upstream(workdir: Path, workers: int = 1, cpus: frozenset[int] | None = None) -> Nginx:
    port = free_port()
    return await Nginx.start(workdir, UPSTREAM.format(port=port), port, workers, cpus)


async def reverse_proxy(
    workdir: Path, target: str, workers: int = 1, cpus: frozenset[int] | None = None
) -> Nginx:
    """nginx proxying to `target` (host:port), keep-alive and upgrades passed through."""
    port = free_port()
    upstream_port = target.rsplit(":", 1)[1]
    body = PROXY.format(port=port, upstream=upstream_port, target="backend")
    body = body.replace("server 127.0.0.1:" + upstream_port, "server " + target)
    return await Nginx.start(workdir, body, port, workers, cpus)
