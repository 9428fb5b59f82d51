"""The drone's settings: one TOML file for the agent and the proxy.

Sections: top level (identity, NATS, state), `[docker]` (how backends run),
`[agent]` (limits and timings of backend lives), `[proxy]` (the HTTP side).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Literal

import msgspec

from shared import credentials
from shared.bus import NatsSettings
from shared.config import ConfigError, parse_listen
from shared.ids import DRONE_ID_PATTERN, PATTERN_MEANINGS, is_valid_cluster, is_valid_drone_id


class DockerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    socket: str | None = None  # unix socket path or tcp:// URL; None: DOCKER_HOST or the default
    network: str | None = None  # Docker network backends join; None: the default bridge
    runtime: str | None = None  # e.g. "runsc"; None: the engine's default
    allow_volume_mounts: bool = False
    extra_labels: dict[str, str] = {}  # added to every container (tests label theirs)
    api_timeout_secs: float = 30.0  # any one Docker API call (create, start, inspect, remove)
    pull_timeout_secs: float = 600.0  # one image pull, start to finish
    max_concurrent_pulls: int = 4  # pulls at once; more wait, and other calls never do
    check_secs: float = 1.0  # how often an unreachable engine is tried again
    # Image GC (drone.agent.imagegc): above the high mark of disk use, unused images go,
    # least recently used first, down to the low mark. The disk is the filesystem at
    # image_gc_path (None: the engine's root directory, as this process sees it).
    image_gc: bool = True
    image_gc_high_percent: float = 85.0
    image_gc_low_percent: float = 80.0
    image_gc_interval_secs: float = 60.0
    image_gc_path: str | None = None


class AgentSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_backends: int = 1000
    ready_timeout_secs: float = 60.0
    ready_probe_interval_secs: float = 0.05  # the longest pause between readiness probes
    ready_probe_timeout_secs: float = 1.0  # each probe's own connect-and-answer limit
    heartbeat_secs: float = 4.0
    stats_secs: float = 10.0
    dns_refresh_secs: float = 50.0
    reconcile_secs: float = 5.0
    sweep_interval_secs: float = 0.25
    terminate_on_shutdown: bool = False
    # SIGTERM, then this long, then SIGKILL; a spawn request may give its own (ext field).
    termination_grace_secs: int = 10
    status_timeout_secs: float = 5.0  # one state update's wait for the controller's answer
    status_retry_max_secs: float = 5.0  # the longest pause between retries of a state update
    log_line_max_bytes: int = 16 * 1024  # longer container output lines are split


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
    # Idle keep-alive connections kept per backend. With 8, one backend asked by 64
    # browsers at once got about a quarter fewer answers per second than with 64 (its
    # requests reconnected); idle ones close after upstream_idle_secs.
    upstream_pool_size: int = 64
    upstream_idle_secs: float = 30.0  # a pooled upstream connection unused this long is closed
    retry_after_secs: int = 2  # Retry-After on a 503 for a backend that is not ready yet
    tls_reload_interval_secs: float = 5.0  # how often the certificate files are checked
    linger_secs: float = 2.0  # how long a socket closed after an error drains unread request bytes
    # Processes serving the listener (SO_REUSEPORT). 1: the drone process alone; N > 1: the
    # drone process and N - 1 worker processes; 0 or "auto": one per CPU.
    workers: int | Literal["auto"] = 1


class DroneSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    cluster: str = "localhost"
    drone_id: str | None = None  # None: generated once and kept in state_dir
    ip: str | None = None  # public IP; None: discovered from the default route
    pool: str | None = None  # take only requests naming this pool; None: the unnamed pool
    state_dir: str = ".state/drone"
    metrics_listen: str | None = "127.0.0.1:9102"
    log_level: str = "info"
    log_format: str = "text"
    docker: DockerSettings = msgspec.field(default_factory=DockerSettings)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    proxy: ProxySettings = msgspec.field(default_factory=ProxySettings)


_POOL = re.compile(r"[a-zA-Z0-9._-]{1,64}")  # as shared.protocol.Pool

# Short PLANE_* names for the flags' environment twins.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "proxy_listen": ("proxy", "listen"),
    "proxy_workers": ("proxy", "workers"),
    "docker_network": ("docker", "network"),
    "docker_socket": ("docker", "socket"),
}


def enabled(listen: str | None) -> str | None:
    """A listen address, or None when it is switched off (`""`, `"off"`, `"none"`)."""
    if listen is None or listen.strip().lower() in ("", "off", "none"):
        return None
    return listen


MAX_PROXY_WORKERS = 256


def proxy_workers(settings: ProxySettings) -> int:
    """How many processes serve the proxy's listener; raises `ConfigError`."""
    workers = settings.workers
    if workers == "auto" or workers == 0:
        return os.cpu_count() or 1
    if not 0 < workers <= MAX_PROXY_WORKERS:
        raise ConfigError(
            f"proxy.workers: must be 1 to {MAX_PROXY_WORKERS}, 0 or 'auto', got {workers}"
        )
    return workers


def check(settings: DroneSettings) -> None:
    """Refuse settings that would fail later, naming the key; raises `ConfigError`."""
    try:
        found = credentials.check_role(settings.nats.credentials_file, "drone")
    except credentials.CredentialsError as exc:
        raise ConfigError(f"nats.credentials_file: {exc}") from None
    if found is not None and found.drone and settings.drone_id not in (None, found.drone):
        raise ConfigError(
            f"drone_id: {settings.drone_id!r}, but nats.credentials_file names drone "
            f"{found.drone!r} (the credentials decide: leave drone_id unset)"
        )
    if not is_valid_cluster(settings.cluster):
        raise ConfigError(f"cluster: {settings.cluster!r} is not a domain name (optionally :port)")
    if settings.drone_id is not None and not is_valid_drone_id(settings.drone_id):
        raise ConfigError(f"drone_id: {settings.drone_id!r} {PATTERN_MEANINGS[DRONE_ID_PATTERN]}")
    if settings.ip is not None:
        try:
            ipaddress.ip_address(settings.ip)
        except ValueError:
            raise ConfigError(f"ip: {settings.ip!r} is not an IP address") from None
    docker = settings.docker
    if not 0 <= docker.image_gc_low_percent <= docker.image_gc_high_percent <= 100:
        raise ConfigError(
            "docker.image_gc_low_percent and image_gc_high_percent: want "
            f"0 <= low <= high <= 100, got {docker.image_gc_low_percent} and "
            f"{docker.image_gc_high_percent}"
        )
    if settings.pool is not None and not _POOL.fullmatch(settings.pool):
        raise ConfigError(f"pool: {settings.pool!r} is not 1-64 of a-z A-Z 0-9 . _ -")
    for key, listen in (
        ("metrics_listen", enabled(settings.metrics_listen)),
        ("proxy.listen", settings.proxy.listen),
    ):
        if listen is not None:
            try:
                parse_listen(listen)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    agent = settings.agent
    positive = {
        "agent.max_backends": agent.max_backends,
        "agent.ready_timeout_secs": agent.ready_timeout_secs,
        "agent.ready_probe_interval_secs": agent.ready_probe_interval_secs,
        "agent.ready_probe_timeout_secs": agent.ready_probe_timeout_secs,
        "agent.heartbeat_secs": agent.heartbeat_secs,
        "agent.stats_secs": agent.stats_secs,
        "agent.dns_refresh_secs": agent.dns_refresh_secs,
        "agent.reconcile_secs": agent.reconcile_secs,
        "agent.sweep_interval_secs": agent.sweep_interval_secs,
        "agent.status_timeout_secs": agent.status_timeout_secs,
        "agent.status_retry_max_secs": agent.status_retry_max_secs,
        "agent.log_line_max_bytes": agent.log_line_max_bytes,
        "docker.api_timeout_secs": settings.docker.api_timeout_secs,
        "docker.pull_timeout_secs": settings.docker.pull_timeout_secs,
        "docker.max_concurrent_pulls": settings.docker.max_concurrent_pulls,
        "docker.check_secs": settings.docker.check_secs,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be more than 0, got {value}")
    proxy_workers(settings.proxy)
    if agent.termination_grace_secs < 0:
        raise ConfigError(
            f"agent.termination_grace_secs: must be 0 or more, got {agent.termination_grace_secs}"
        )
