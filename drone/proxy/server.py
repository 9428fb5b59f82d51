"""The proxy's listeners and its orderly stop.

`ProxyServer` is what the drone process creates: it binds the main listener
(HTTPS when a certificate is configured, plain HTTP otherwise) and, with TLS,
optionally a plain listener that redirects to it. With `proxy.workers` above
one it binds the listener with SO_REUSEPORT and starts the worker processes
that share it (`drone.proxy.fleet`); each of those runs a `ProxyServer` of
its own with `reuse_port` and one process.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import msgspec
from prometheus_client import CollectorRegistry

import drone.proxy
from drone.config import ProxySettings, proxy_workers
from drone.proxy.client import ClientConnection
from drone.proxy.context import ProxyContext
from drone.proxy.fleet import WorkerFleet, WorkerOptions
from drone.proxy.headers import cluster_domain
from drone.proxy.metrics import ProxyMetrics
from drone.proxy.redirect import RedirectConnection
from drone.proxy.tls import CertificateStore
from drone.proxy.upstream import UpstreamPool
from drone.routes import Activity, RouteTable
from shared.config import ConfigError, parse_listen

log = logging.getLogger(__name__)


class ProxyServer:
    def __init__(
        self,
        settings: ProxySettings,
        cluster: str,
        routes: RouteTable,
        activity: Activity,
        registry: CollectorRegistry,
        *,
        reuse_port: bool = False,
        worker_options: WorkerOptions | None = None,
    ) -> None:
        """Raises `ConfigError` for settings that cannot work together."""
        self.processes = proxy_workers(settings)
        if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
            raise ConfigError("proxy.tls_cert_file and proxy.tls_key_file go together")
        if settings.https_redirect_listen is not None and settings.tls_cert_file is None:
            raise ConfigError("proxy.https_redirect_listen needs proxy.tls_cert_file")
        self.settings = settings
        self.cluster = cluster
        self.routes = routes
        self.activity = activity
        self.metrics = ProxyMetrics(registry)
        self.worker_options = worker_options or WorkerOptions()
        self.fleet: WorkerFleet | None = None  # with more than one process
        self._reuse_port = reuse_port or self.processes > 1
        self.certificates: CertificateStore | None = None
        self._ctx: ProxyContext | None = None
        self._server: asyncio.Server | None = None
        self._redirect: asyncio.Server | None = None
        self._port: int | None = None
        self._redirect_port: int | None = None

    @property
    def port(self) -> int:
        """The main listener's bound port (still known after stop())."""
        assert self._port is not None, "start() first"
        return self._port

    @property
    def redirect_port(self) -> int | None:
        return self._redirect_port

    @property
    def context(self) -> ProxyContext:
        assert self._ctx is not None, "start() first"
        return self._ctx

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        ssl_context = None
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            try:
                self.certificates = CertificateStore(
                    settings.tls_cert_file,
                    settings.tls_key_file,
                    settings.tls_reload_interval_secs,
                )
                ssl_context = self.certificates.listening_context()
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load proxy.tls_cert_file {settings.tls_cert_file!r} with "
                    f"proxy.tls_key_file {settings.tls_key_file!r}: {exc}"
                ) from exc
        pool = UpstreamPool(
            loop,
            settings.upstream_pool_size,
            settings.upstream_connect_timeout_secs,
            settings.upstream_idle_secs,
        )
        ctx = ProxyContext(
            loop=loop,
            settings=settings,
            routes=self.routes,
            activity=self.activity,
            metrics=self.metrics,
            pool=pool,
            domain=cluster_domain(self.cluster),
            secure=ssl_context is not None,
        )
        self._ctx = ctx
        host, port = parse_listen(settings.listen)
        self._server = await loop.create_server(
            lambda: ClientConnection(ctx),
            host,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=settings.head_timeout_secs if ssl_context else None,
            backlog=1024,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        if settings.https_redirect_listen is not None:
            rhost, rport = parse_listen(settings.https_redirect_listen)
            try:
                self._redirect = await loop.create_server(
                    lambda: RedirectConnection(
                        lambda: self.port, settings.head_timeout_secs, settings.max_head_bytes
                    ),
                    rhost,
                    rport,
                    reuse_address=True,
                )
            except OSError:
                self._server.close()
                raise
            self._redirect_port = int(self._redirect.sockets[0].getsockname()[1])
        if self.processes > 1:
            await self._start_workers(host)
        if self.certificates is not None:
            self.certificates.start(loop)
        log.info(
            "proxy listening on %s:%d (%s)%s, %s",
            host,
            self.port,
            "https" if ssl_context else "http",
            f" in {self.processes} processes" if self.processes > 1 else "",
            "compiled" if drone.proxy.compiled() else "pure Python",
        )

    async def _start_workers(self, host: str) -> None:
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        worker_settings = msgspec.structs.replace(
            self.settings, listen=listen, workers=1, https_redirect_listen=None
        )
        fleet = WorkerFleet(
            self.processes - 1,
            worker_settings,
            self.cluster,
            self.routes,
            self.activity,
            self.metrics,
            self.worker_options,
        )
        try:
            await fleet.start()
        except BaseException:
            for server in (self._server, self._redirect):
                if server is not None:
                    server.close()
            self._server = self._redirect = None
            raise
        self.fleet = fleet

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish for up to `grace` seconds,
        then close every socket, upgraded ones included; workers alike."""
        if self.fleet is not None:
            await asyncio.gather(self._stop_here(grace), self.fleet.stop(grace))
        else:
            await self._stop_here(grace)

    async def _stop_here(self, grace: float) -> None:
        for server in (self._server, self._redirect):
            if server is not None:
                server.close()
        if self.certificates is not None:
            self.certificates.stop()
        ctx = self._ctx
        if ctx is None:
            return
        for conn in list(ctx.connections):
            conn.shutdown()
        if ctx.connections:
            ctx.drained = asyncio.Event()
            try:
                await asyncio.wait_for(ctx.drained.wait(), grace)
            except TimeoutError:
                log.info("cutting %d connections still busy at shutdown", len(ctx.connections))
        for conn in list(ctx.connections):
            conn.abort()
        for tunnel in list(ctx.tunnels):
            tunnel.close()
        ctx.pool.close()
        for server in (self._server, self._redirect):
            if server is not None:
                try:
                    await asyncio.wait_for(server.wait_closed(), 1.0)
                except TimeoutError:
                    log.warning("proxy listener did not close in time")
        self._server = None
        self._redirect = None
