"""Serving a Prometheus registry over HTTP.

Each daemon keeps its own `CollectorRegistry` (so several can live in one test
process) and serves it with prometheus-client's threaded HTTP server, which
stays up even while the event loop is busy.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from shared.config import parse_listen


class MetricsServer:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` on `HOST:PORT` (port 0 picks a free one)."""
    host, port = parse_listen(listen)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
