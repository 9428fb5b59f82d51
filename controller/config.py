"""The controller's settings."""

from __future__ import annotations

import msgspec

from shared.bus import NatsSettings


class DnsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str | None = None  # HOST:PORT for UDP and TCP; None: no DNS server
    ttl_secs: int = 60
    soa_email: str = "hostmaster"


class ControllerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    clusters: list[str] = []  # empty: serve every cluster
    metrics_listen: str | None = "127.0.0.1:9101"
    log_level: str = "info"
    log_format: str = "text"
    heartbeat_secs: float = 4.0
    fresh_heartbeats: int = 3  # a drone not heard for this many heartbeats takes no backends
    lost_after_secs: float = 30.0  # a drone silent this long is Lost, and so are its backends
    spawn_timeout_secs: float = 5.0
    spawn_attempts: int = 3
    shutdown_grace_secs: float = 10.0
    dns: DnsSettings = msgspec.field(default_factory=DnsSettings)


ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "dns_listen": ("dns", "listen"),
    "cluster": ("clusters",),
}
