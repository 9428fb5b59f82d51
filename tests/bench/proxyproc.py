"""Our drone proxy alone in a process of its own, with static routes.

`python -m tests.bench.proxyproc --cluster C --route ID=HOST:PORT [--route ...]`
prints `listening PORT` once it accepts connections and serves until SIGTERM.
It runs the proxy `plane-drone` runs (`drone.proxy.server.ProxyServer` on
uvloop, with the real route table and activity tracker), minus NATS and
Docker: every route is Ready from the start and needs no token.
"""

from __future__ import annotations

import argparse
import asyncio

from prometheus_client import CollectorRegistry

import drone.proxy
from drone.config import ProxySettings
from drone.proxy.server import ProxyServer
from drone.routes import ActivityTracker, RouteTable
from shared import daemon
from tests.bench.services import raise_nofile


def parse_route(text: str) -> tuple[str, str, int]:
    backend, _, address = text.partition("=")
    host, _, port = address.rpartition(":")
    if not backend or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want ID=HOST:PORT, got {text!r}")
    return backend, host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.proxyproc")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--route", type=parse_route, action="append", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--pool-size", type=int, default=64, help="idle upstream connections kept per backend"
    )
    parser.add_argument("--workers", type=int, default=1, help="proxy processes (proxy.workers)")
    parser.add_argument("--nofile", type=int, default=65536, help="open-file limit to ask for")
    args = parser.parse_args()
    raise_nofile(args.nofile)
    daemon.setup_logging("warning", "text")

    async def serve(stop: asyncio.Event) -> None:
        routes = RouteTable()
        activity = ActivityTracker()
        for backend, host, port in args.route:
            routes.set_ready(backend, host, port, None)
            activity.track(backend)
        settings = ProxySettings(
            listen=args.listen, upstream_pool_size=args.pool_size, workers=args.workers
        )
        server = ProxyServer(settings, args.cluster, routes, activity, CollectorRegistry())
        await server.start()
        if server.fleet is not None:
            await server.fleet.synced()  # every process has the routes
        try:
            build = "compiled" if drone.proxy.compiled() else "pure"
            print(f"listening {server.port} {build}", flush=True)
            await stop.wait()
        finally:
            await server.stop(grace=1.0)

    daemon.run(serve)


if __name__ == "__main__":
    main()
