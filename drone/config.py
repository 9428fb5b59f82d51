"""The drone's settings: one TOML file for the agent and the proxy.

Sections: top level (identity, NATS, state), `[docker]` (how backends run),
`[agent]` (limits and timings of backend lives), `[proxy]` (the HTTP side).
"""

from __future__ import annotations

import msgspec

from shared.bus import NatsSettings


class DockerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    socket: str | None = None  # unix socket path or tcp:// URL; None: DOCKER_HOST or the default
    network: str | None = None  # Docker network backends join; None: the default bridge
    runtime: str | None = None  # e.g. "runsc"; None: the engine's default
    allow_volume_mounts: bool = False
    extra_labels: dict[str, str] = {}  # added to every container (tests label theirs)


class AgentSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_backends: int = 1000
    ready_timeout_secs: float = 60.0
    ready_probe_interval_secs: float = 0.05
    heartbeat_secs: float = 4.0
    stats_secs: float = 10.0
    dns_refresh_secs: float = 50.0
    reconcile_secs: float = 5.0
    sweep_interval_secs: float = 0.25
    terminate_on_shutdown: bool = False
    stop_timeout_secs: int = 10


class ProxySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8080"
    https_redirect_listen: str | None = None  # plain HTTP listener that redirects to HTTPS
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    hold_until_ready_secs: float = 30.0
    head_timeout_secs: float = 10.0
    keepalive_timeout_secs: float = 75.0
    upstream_connect_timeout_secs: float = 5.0
    upstream_response_timeout_secs: float = 60.0
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int | None = None  # None: no limit
    upstream_pool_size: int = 8  # idle keep-alive connections kept per backend
    upstream_idle_secs: float = 30.0  # a pooled upstream connection unused this long is closed
    retry_after_secs: int = 2  # Retry-After on a 503 for a backend that is not ready yet
    tls_reload_interval_secs: float = 5.0  # how often the certificate files are checked
    linger_secs: float = 2.0  # how long a socket closed after an error drains unread request bytes


class DroneSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    cluster: str = "localhost"
    drone_id: str | None = None  # None: generated once and kept in state_dir
    ip: str | None = None  # public IP; None: discovered from the default route
    state_dir: str = ".state/drone"
    metrics_listen: str | None = "127.0.0.1:9102"
    log_level: str = "info"
    log_format: str = "text"
    docker: DockerSettings = msgspec.field(default_factory=DockerSettings)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    proxy: ProxySettings = msgspec.field(default_factory=ProxySettings)


# Short PLANE_* names for the flags' environment twins.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "proxy_listen": ("proxy", "listen"),
    "docker_network": ("docker", "network"),
}
