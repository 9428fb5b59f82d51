"""The controller's settings.

Timings are settings rather than constants so that tests can run a whole
cluster's life in a second (heartbeat 0.2 s) while production keeps the
protocol's 4 s rhythm. `listen` values of `""` or `"off"` switch a server off.
"""

from __future__ import annotations

import msgspec

from shared import credentials
from shared.bus import NatsSettings
from shared.config import ConfigError, parse_listen
from shared.ids import is_valid_cluster


class DnsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str | None = None  # HOST:PORT for UDP and TCP; None: no DNS server
    ttl_secs: int = 60
    soa_email: str = "hostmaster"  # local part of the SOA RNAME, inside each zone
    soa_mname: str = "ns"  # label of the primary name server named in each zone's SOA
    a_record_expiry_secs: float = 120.0  # a SetDnsRecord A not refreshed this long is dropped
    txt_record_expiry_secs: float = 600.0  # each TXT value lives this long after its last write
    tcp_idle_secs: float = 10.0  # a TCP client silent this long is disconnected


class ControllerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    clusters: list[str] = []  # empty: serve every cluster
    metrics_listen: str | None = "127.0.0.1:9101"
    log_level: str = "info"
    log_format: str = "text"
    heartbeat_secs: float = 4.0
    fresh_heartbeats: int = 3  # a drone not heard for this many heartbeats takes no backends
    lost_after_secs: float = 30.0  # a drone silent this long is Lost, and so are its backends
    forget_lost_after_secs: float = 3600.0  # a Lost drone leaves the listing after this long
    max_drones: int = 10_000  # drones kept in the registry; heartbeats of more are ignored
    warmup_secs: float | None = None  # listen to heartbeats this long before scheduling
    spawn_timeout_secs: float = 5.0
    spawn_attempts: int = 3
    nats_timeout_secs: float = 5.0  # JetStream publishes and reads
    shutdown_grace_secs: float = 10.0
    status_max_age_secs: float = 86400.0  # retention of the backend_status stream
    status_max_per_subject: int = 16  # states kept per backend in that stream
    # Copies of each stream in a NATS cluster; unset: the cluster's size, up to 3.
    # An operator's higher count on an existing stream is never lowered.
    stream_replicas: int | None = None
    dns: DnsSettings = msgspec.field(default_factory=DnsSettings)

    @property
    def fresh_secs(self) -> float:
        return self.heartbeat_secs * self.fresh_heartbeats

    @property
    def warmup(self) -> float:
        return self.heartbeat_secs if self.warmup_secs is None else self.warmup_secs


def enabled(listen: str | None) -> str | None:
    """A listen address, or None when it is switched off."""
    if listen is None or listen.strip().lower() in ("", "off", "none"):
        return None
    return listen


def check(settings: ControllerSettings) -> None:
    """Refuse settings that would fail later, naming the key; raises `ConfigError`."""
    try:
        credentials.check_role(settings.nats.credentials_file, "controller")
    except credentials.CredentialsError as exc:
        raise ConfigError(f"nats.credentials_file: {exc}") from None
    for cluster in settings.clusters:
        if not is_valid_cluster(cluster):
            raise ConfigError(f"clusters: {cluster!r} is not a domain name (optionally :port)")
    for key, listen in (
        ("metrics_listen", settings.metrics_listen),
        ("dns.listen", settings.dns.listen),
    ):
        address = enabled(listen)
        if address is not None:
            try:
                parse_listen(address)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    positive = {
        "heartbeat_secs": settings.heartbeat_secs,
        "fresh_heartbeats": settings.fresh_heartbeats,
        "lost_after_secs": settings.lost_after_secs,
        "spawn_timeout_secs": settings.spawn_timeout_secs,
        "spawn_attempts": settings.spawn_attempts,
        "max_drones": settings.max_drones,
        "stream_replicas": settings.stream_replicas or 1,
        "nats_timeout_secs": settings.nats_timeout_secs,
        "status_max_age_secs": settings.status_max_age_secs,
        "status_max_per_subject": settings.status_max_per_subject,
        "dns.tcp_idle_secs": settings.dns.tcp_idle_secs,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be more than 0, got {value}")


ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "dns_listen": ("dns", "listen"),
    "cluster": ("clusters",),
}
