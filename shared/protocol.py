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

from shared import checks, reference
from shared.ids import WireBackendId, WireCluster, WireDroneId

# Bounds on every field, so that no message (and nothing kept from one) is
# larger than these allow; docs/PROTOCOL.md lists them.
MAX_SECONDS = 2**31 - 1  # about 68 years: "never" for any timer, and safe for every one
MAX_BYTES = 2**63 - 1  # Docker's int64
MAX_METADATA_ENTRIES = 64
MAX_ENV_ENTRIES = 256
MAX_KEY_LENGTH = 256
MAX_METADATA_VALUE_LENGTH = 4096
MAX_ENV_VALUE_LENGTH = 32 * 1024
MAX_VOLUME_MOUNTS = 16
MAX_SECRET_LENGTH = 4096  # registry passwords, bearer tokens
MAX_SHORT_TEXT = 256  # user names, versions, DNS values
MAX_LOG_TEXT = 64 * 1024
MAX_DNS_VALUE = 4096  # a TXT value, served as strings of 255
MAX_RUNNING_BACKENDS = 1_000_000
MAX_LISTED_BACKENDS = 10_000  # backends named in one heartbeat or fence

Seconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_SECONDS)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_SHORT_TEXT)]
Secret = Annotated[str, msgspec.Meta(max_length=MAX_SECRET_LENGTH)]
Key = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LENGTH)]
Metadata = Annotated[
    dict[Key, Annotated[str, msgspec.Meta(max_length=MAX_METADATA_VALUE_LENGTH)]],
    msgspec.Meta(max_length=MAX_METADATA_ENTRIES),
]
Environment = Annotated[
    dict[Key, Annotated[str, msgspec.Meta(max_length=MAX_ENV_VALUE_LENGTH)]],
    msgspec.Meta(max_length=MAX_ENV_ENTRIES),
]
ImageReference = Annotated[
    str, msgspec.Meta(min_length=1, max_length=reference.MAX_REFERENCE_LENGTH)
]
IpText = Annotated[str, msgspec.Meta(max_length=45)]  # the longest IPv6 text form
# A drone pool's name (ext): drones started with --pool NAME take only requests naming it.
Pool = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9._-]+$")]
MAX_LOCK_LENGTH = 128
# A session key: a backend ID's characters plus `.`, `_`, `/` and `:` (late Plane 0.3).
Lock = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_LOCK_LENGTH, pattern=r"^[a-zA-Z0-9._/:-]+$")
]


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


class EndReason(enum.StrEnum):
    """(ext) Why a backend ended, carried by its terminal state (no new state values)."""

    SWEPT = "swept"  # idle for max_idle_secs
    TERMINATED = "terminated"  # through the API
    LIFETIME = "lifetime"  # reached lifetime_limit_secs
    LOST = "lost"  # its drone vanished
    STARTUP_TIMEOUT = "startup_timeout"  # never answered on its port in time
    EXITED = "exited"  # exited on its own with status 0
    ERROR = "error"  # exited with another status (exit_code), or Docker failed it


class DnsRecordKind(enum.StrEnum):
    A = "A"
    TXT = "TXT"


# --- Scheduling --------------------------------------------------------------


class UsernamePasswordCredentials(Message, kw_only=True):
    username: ShortText
    password: Secret


class DockerCredentials(Message, kw_only=True, omit_defaults=True):
    """Externally tagged: `{"UsernamePassword": {...}}`."""

    UsernamePassword: UsernamePasswordCredentials | None = None

    def __post_init__(self) -> None:
        if self.UsernamePassword is None:
            raise ValueError('credentials must be {"UsernamePassword": {...}}')


MAX_CPU_PERIOD_SECS = 1  # the kernel's CFS period is at most one second


class ResourceLimits(Message, kw_only=True):
    cpu_period: Annotated[int, msgspec.Meta(ge=0, le=MAX_CPU_PERIOD_SECS)] | None = None
    cpu_period_percent: Percent | None = None
    cpu_time_limit: Seconds | None = None
    memory_limit_bytes: Annotated[int, msgspec.Meta(ge=0, le=MAX_BYTES)] | None = None


class Executable(Message, kw_only=True):
    """What to run: `DockerExecutableConfig` on the wire."""

    image: ImageReference
    env: Environment = {}
    credentials: DockerCredentials | None = None
    resource_limits: ResourceLimits = msgspec.field(default_factory=ResourceLimits)
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    port: Port | None = None
    volume_mounts: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_VOLUME_MOUNTS)] = []

    def __post_init__(self) -> None:
        # "field: reason" is joined to the path by `wire.describe_validation_error`.
        problem = checks.image_problem(self.image)
        if problem is not None:
            raise ValueError(f"image: {problem}")
        problem = checks.env_problem(self.env)
        if problem is not None:
            raise ValueError(f"env: {problem}")
        for index, mount in enumerate(self.volume_mounts):
            problem = checks.mount_problem(mount)
            if problem is not None:
                raise ValueError(f"volume_mounts.{index}: {problem}")


DEFAULT_PORT = 8080
DEFAULT_MAX_IDLE_SECS = 30


class ScheduleRequest(Message, kw_only=True):
    cluster: WireCluster
    backend_id: WireBackendId | None = None
    max_idle_secs: Seconds = DEFAULT_MAX_IDLE_SECS
    metadata: Metadata = {}
    executable: Executable
    require_bearer_token: bool = False
    # (late 0.3) Get-or-create: the live backend holding this lock, else a new one that holds it.
    lock: Lock | None = None
    lifetime_limit_secs: Seconds | None = None  # (ext) terminated at this age, even if busy
    termination_grace_secs: Seconds | None = None  # (ext) SIGTERM → SIGKILL; None: the drone's
    pool: Pool | None = None  # (ext) only drones of this pool take it; None: the unnamed pool


class ScheduledBackend(Message, kw_only=True, omit_defaults=True):
    drone: str
    backend_id: str
    bearer_token: str | None = None
    # (late 0.3) False when the lock's running holder was returned. Always set in a
    # schedule reply (never None there, so never omitted); a fetch reply leaves it out.
    spawned: bool | None = None


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


def scheduled(
    drone: str, backend_id: str, bearer_token: str | None = None, spawned: bool | None = True
) -> ScheduleReply:
    return ScheduleReply(
        Scheduled=ScheduledBackend(
            drone=drone, backend_id=backend_id, bearer_token=bearer_token, spawned=spawned
        )
    )


class FetchRequest(Message, kw_only=True):
    """(late 0.3) On `cluster.{c}.fetch`: the backend holding a lock, never spawning one."""

    cluster: WireCluster
    lock: Lock


NO_BACKEND_FOR_LOCK: Literal["NoBackendForLock"] = "NoBackendForLock"
FetchResponse = ScheduleReply | Literal["NoBackendForLock"]


def invalid_request(message: str) -> ScheduleReply:
    return ScheduleReply(InvalidRequest=InvalidRequestBody(message=message))


class SpawnRequest(Message, kw_only=True):
    """ScheduleRequest resolved for one drone. Reply: `true` accepted, `false` refused."""

    cluster: WireCluster
    drone_id: WireDroneId
    backend_id: WireBackendId
    max_idle_secs: Seconds = DEFAULT_MAX_IDLE_SECS
    metadata: Metadata = {}
    executable: Executable
    bearer_token: Secret | None = None
    # (ext) A drone that reads the request after this time refuses it: the
    # controller has stopped waiting and may have placed the backend elsewhere.
    deadline: Timestamp | None = None
    lock: Lock | None = None  # (late 0.3) the lock it holds; the container sees PLANE_LOCK
    lifetime_limit_secs: Seconds | None = None  # (ext) as in ScheduleRequest
    termination_grace_secs: Seconds | None = None  # (ext) as in ScheduleRequest
    pool: Pool | None = None  # (ext) as in ScheduleRequest; a drone of another pool refuses it


SpawnReply = bool | ScheduleReply
"""`true` accepted, `false` refused; (ext) `{"InvalidRequest": ...}` when the request itself
is at fault on this drone (the controller tells the client if no drone takes it)."""


class TerminationRequest(Message, kw_only=True):
    cluster_id: WireCluster
    backend_id: WireBackendId
    hard: bool = False  # (ext) SIGKILL now; else SIGTERM, the grace period, then SIGKILL


class DrainDrone(Message, kw_only=True):
    drone: WireDroneId
    cluster: WireCluster
    drain: bool = True


# --- Drone presence ----------------------------------------------------------


def _check_ip(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"ip {value!r} is not an IP address") from None


class DroneConnectRequest(Message, kw_only=True):
    drone_id: WireDroneId
    cluster: WireCluster
    ip: IpText

    def __post_init__(self) -> None:
        _check_ip(self.ip)


class DroneStatusMessage(Message, kw_only=True):
    drone_id: WireDroneId
    cluster: WireCluster
    drone_version: ShortText = ""
    ready: bool
    state: DroneState = DroneState.READY
    running_backends: Annotated[int, msgspec.Meta(ge=0, le=MAX_RUNNING_BACKENDS)] | None = None
    ip: IpText | None = None  # (ext) lets a controller learn the IP without the register message
    # (ext) The backends this drone runs (not yet ended), so that controllers can
    # stop any that they hold as ended or as placed on another drone.
    backends: (
        Annotated[list[WireBackendId], msgspec.Meta(max_length=MAX_LISTED_BACKENDS)] | None
    ) = None
    pool: Pool | None = None  # (ext) the drone's pool; None: the unnamed pool

    def __post_init__(self) -> None:
        if self.ip is not None:
            _check_ip(self.ip)


class Fence(Message, kw_only=True):
    """(ext) One backend that its drone must stop without a report."""

    backend: WireBackendId
    # Stop the life that began before this time (None: whatever runs under this ID);
    # a later life of a reused ID is left alone.
    since: Timestamp | None = None
    reason: ShortText = ""


class FenceBackends(Message, kw_only=True):
    """(ext) Controller → drone on `drone.{d}.fence`: these lives are over for the cluster."""

    cluster: WireCluster
    drone: WireDroneId
    backends: Annotated[list[Fence], msgspec.Meta(max_length=MAX_LISTED_BACKENDS)]


# --- Backend state -----------------------------------------------------------


ExitCode = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]


class UpdateBackendStateMessage(Message, kw_only=True, omit_defaults=True):
    """A drone's report; the (ext) fields are left out when unset, so a live state's
    message is the 0.3 one exactly."""

    cluster: WireCluster
    state: BackendState
    backend: WireBackendId
    time: Timestamp
    drone: WireDroneId
    reason: ShortText | None = None  # (ext) on terminal states: an EndReason value
    exit_code: ExitCode | None = None  # (ext) the container's, where there is one


class BackendStateMessage(Message, kw_only=True, omit_defaults=True):
    """As stored on the stream; the (ext) fields are left out when unset."""

    cluster: WireCluster
    state: BackendState
    backend: WireBackendId
    time: Timestamp
    drone: WireDroneId | None = None  # (ext) which drone runs it, so an index can be rebuilt
    reason: ShortText | None = None  # (ext) on terminal states: an EndReason value
    exit_code: ExitCode | None = None  # (ext) the container's, where there is one


class DroneLogMessage(Message, kw_only=True):
    backend_id: WireBackendId
    kind: LogKind
    text: Annotated[str, msgspec.Meta(max_length=MAX_LOG_TEXT)]


class BackendStatsMessage(Message, kw_only=True):
    backend_id: WireBackendId
    cpu_use_percent: float
    mem_use_percent: float


# --- DNS ---------------------------------------------------------------------


class SetDnsRecord(Message, kw_only=True):
    cluster: WireCluster
    kind: DnsRecordKind
    name: ShortText
    value: Annotated[str, msgspec.Meta(max_length=MAX_DNS_VALUE)]


class SetAcmeDnsRecord(Message, kw_only=True):
    cluster: WireCluster
    value: ShortText


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
    pool: str | None = None  # None: the unnamed pool


class BackendInfo(Message, kw_only=True):
    """(ext) One backend as a controller's index knows it."""

    backend_id: str
    cluster: str
    drone: str | None
    state: BackendState
    time: Timestamp
