"""Every message of the wire protocol as a msgspec Struct.

Shapes follow docs/PROTOCOL.md exactly. Externally tagged enums
(`{"Scheduled": {...}}`) are Structs whose fields are the variant names, all
optional, with exactly one set; data-less variants are bare strings. Fields
marked (ext) are this project's additions and always optional.
"""

from __future__ import annotations

import enum
import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from shared.ids import WireBackendId

Seconds = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(msgspec.Struct, kw_only=True):
    """Base of every wire message: unknown fields are ignored by default."""


# --- Enums -----------------------------------------------------------------


class PullPolicy(enum.StrEnum):
    IF_NOT_PRESENT = "IfNotPresent"
    ALWAYS = "Always"
    NEVER = "Never"


class BackendState(enum.StrEnum):
    LOADING = "Loading"
    ERROR_LOADING = "ErrorLoading"
    STARTING = "Starting"
    ERROR_STARTING = "ErrorStarting"
    READY = "Ready"
    TIMED_OUT_BEFORE_READY = "TimedOutBeforeReady"
    FAILED = "Failed"
    EXITED = "Exited"
    SWEPT = "Swept"
    TERMINATED = "Terminated"
    LOST = "Lost"

    @property
    def terminal(self) -> bool:
        return self not in _LIVE_BACKEND_STATES

    @property
    def rank(self) -> int:
        """Order of life: a state never moves to one of lower rank."""
        return _BACKEND_RANK[self]


_LIVE_BACKEND_STATES = frozenset({BackendState.LOADING, BackendState.STARTING, BackendState.READY})
_LIFE_ORDER = {BackendState.LOADING: 0, BackendState.STARTING: 1, BackendState.READY: 2}
_BACKEND_RANK = {state: _LIFE_ORDER.get(state, 3) for state in BackendState}


class DroneState(enum.StrEnum):
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"
    DRAINED = "Drained"
    STOPPED = "Stopped"
    LOST = "Lost"


class LogKind(enum.StrEnum):
    STDOUT = "Stdout"
    STDERR = "Stderr"
    META = "Meta"


class DnsRecordKind(enum.StrEnum):
    A = "A"
    TXT = "TXT"


# --- Scheduling --------------------------------------------------------------


class UsernamePasswordCredentials(Message, kw_only=True):
    username: str
    password: str


class DockerCredentials(Message, kw_only=True, omit_defaults=True):
    """Externally tagged: `{"UsernamePassword": {...}}`."""

    UsernamePassword: UsernamePasswordCredentials | None = None

    def __post_init__(self) -> None:
        if self.UsernamePassword is None:
            raise ValueError('credentials must be {"UsernamePassword": {...}}')


class ResourceLimits(Message, kw_only=True):
    cpu_period: Seconds | None = None
    cpu_period_percent: Percent | None = None
    cpu_time_limit: Seconds | None = None
    memory_limit_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Executable(Message, kw_only=True):
    """What to run: `DockerExecutableConfig` on the wire."""

    image: NonEmpty
    env: dict[str, str] = {}
    credentials: DockerCredentials | None = None
    resource_limits: ResourceLimits = msgspec.field(default_factory=ResourceLimits)
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    port: Port | None = None
    volume_mounts: list[dict[str, Any]] = []


DEFAULT_PORT = 8080
DEFAULT_MAX_IDLE_SECS = 30


class ScheduleRequest(Message, kw_only=True):
    cluster: NonEmpty
    backend_id: WireBackendId | None = None
    max_idle_secs: Seconds = DEFAULT_MAX_IDLE_SECS
    metadata: dict[str, str] = {}
    executable: Executable
    require_bearer_token: bool = False


class ScheduledBackend(Message, kw_only=True, omit_defaults=True):
    drone: str
    backend_id: str
    bearer_token: str | None = None


class InvalidRequestBody(Message, kw_only=True):
    message: str


class ScheduleReply(Message, kw_only=True, omit_defaults=True):
    """`{"Scheduled": {...}}` or `{"InvalidRequest": {...}}` (ext)."""

    Scheduled: ScheduledBackend | None = None
    InvalidRequest: InvalidRequestBody | None = None

    def __post_init__(self) -> None:
        if (self.Scheduled is None) == (self.InvalidRequest is None):
            raise ValueError("expected exactly one of Scheduled or InvalidRequest")


NO_DRONE_AVAILABLE: Literal["NoDroneAvailable"] = "NoDroneAvailable"
ScheduleResponse = ScheduleReply | Literal["NoDroneAvailable"]


def scheduled(drone: str, backend_id: str, bearer_token: str | None = None) -> ScheduleReply:
    return ScheduleReply(
        Scheduled=ScheduledBackend(drone=drone, backend_id=backend_id, bearer_token=bearer_token)
    )


def invalid_request(message: str) -> ScheduleReply:
    return ScheduleReply(InvalidRequest=InvalidRequestBody(message=message))


class SpawnRequest(Message, kw_only=True):
    """ScheduleRequest resolved for one drone. Reply: `true` accepted, `false` refused."""

    cluster: NonEmpty
    drone_id: NonEmpty
    backend_id: WireBackendId
    max_idle_secs: Seconds = DEFAULT_MAX_IDLE_SECS
    metadata: dict[str, str] = {}
    executable: Executable
    bearer_token: str | None = None


class TerminationRequest(Message, kw_only=True):
    cluster_id: NonEmpty
    backend_id: NonEmpty


class DrainDrone(Message, kw_only=True):
    drone: NonEmpty
    cluster: NonEmpty
    drain: bool = True


# --- Drone presence ----------------------------------------------------------


def _check_ip(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"ip {value!r} is not an IP address") from None


class DroneConnectRequest(Message, kw_only=True):
    drone_id: NonEmpty
    cluster: NonEmpty
    ip: str

    def __post_init__(self) -> None:
        _check_ip(self.ip)


class DroneStatusMessage(Message, kw_only=True):
    drone_id: NonEmpty
    cluster: NonEmpty
    drone_version: str = ""
    ready: bool
    state: DroneState = DroneState.READY
    running_backends: Annotated[int, msgspec.Meta(ge=0)] | None = None
    ip: str | None = None  # (ext) lets a controller learn the IP without the register message

    def __post_init__(self) -> None:
        if self.ip is not None:
            _check_ip(self.ip)


# --- Backend state -----------------------------------------------------------


class UpdateBackendStateMessage(Message, kw_only=True):
    cluster: NonEmpty
    state: BackendState
    backend: NonEmpty
    time: Timestamp
    drone: NonEmpty


class BackendStateMessage(Message, kw_only=True):
    cluster: NonEmpty
    state: BackendState
    backend: NonEmpty
    time: Timestamp
    drone: str | None = None  # (ext) which drone runs it, so an index can be rebuilt


class DroneLogMessage(Message, kw_only=True):
    backend_id: NonEmpty
    kind: LogKind
    text: str


class BackendStatsMessage(Message, kw_only=True):
    backend_id: NonEmpty
    cpu_use_percent: float
    mem_use_percent: float


# --- DNS ---------------------------------------------------------------------


class SetDnsRecord(Message, kw_only=True):
    cluster: NonEmpty
    kind: DnsRecordKind
    name: str
    value: str


class SetAcmeDnsRecord(Message, kw_only=True):
    cluster: NonEmpty
    value: str


# --- Listing (ext) -----------------------------------------------------------


class DroneInfo(Message, kw_only=True):
    """(ext) One drone as a controller's registry knows it."""

    drone_id: str
    cluster: str
    ip: str | None
    state: DroneState
    ready: bool
    running_backends: int
    last_seen: Timestamp
    drone_version: str = ""


class BackendInfo(Message, kw_only=True):
    """(ext) One backend as a controller's index knows it."""

    backend_id: str
    cluster: str
    drone: str | None
    state: BackendState
    time: Timestamp
