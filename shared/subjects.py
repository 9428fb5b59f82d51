"""Builders for every NATS subject of the protocol (see docs/PROTOCOL.md).

Each builder takes plain IDs and returns the subject; the `*_ALL` constants are
the wildcard forms that servers subscribe to.
"""

from __future__ import annotations

from shared.ids import cluster_token

# Subjects served by the controller, in a queue group.
SCHEDULE_ALL = "cluster.*.schedule"
FETCH_ALL = "cluster.*.fetch"
BACKEND_STATUS_ALL = "cluster.*.backend.*.status"
DRONE_REGISTER = "drone.register"
DRONE_STATUS_ALL = "drone.*.status"
DNS_ALL = "cluster.*.dns.*"
ACME_SET_DNS_RECORD = "acme.set_dns_record"
# (ext) The same, on subjects that name the drone, so that NATS permissions can
# pin each drone to its own (see docs/AUTH.md).
DRONE_REGISTER_ALL = "drone.*.register"
DRONE_BACKEND_STATUS_ALL = "cluster.*.drone.*.backend.*.status"
DRONE_DNS_ALL = "cluster.*.drone.*.dns.*"
DRONE_ACME_ALL = "cluster.*.drone.*.acme"
LIST_DRONES_ALL = "cluster.*.drones"
LIST_BACKENDS_ALL = "cluster.*.backends"

# JetStream streams and their subject filters.
BACKEND_STATUS_STREAM = "backend_status"
BACKEND_STATUS_STREAM_SUBJECTS = "backend.*.status"
BACKEND_LOG_STREAM = "backend_log"
BACKEND_LOG_STREAM_SUBJECTS = "backend.*.log"
DNS_RECORD_STREAM = "dns_record"
LOCK_BUCKET = "plane_locks"  # JetStream KV: lock → the backend holding it
LOCK_STREAM = f"KV_{LOCK_BUCKET}"
LOCK_SUBJECT_PREFIX = f"$KV.{LOCK_BUCKET}."  # a lock record is stored under this and its key

# The queue group that controllers share, so each request is handled once.
CONTROLLER_QUEUE = "plane-controller"


def schedule(cluster: str) -> str:
    return f"cluster.{cluster_token(cluster)}.schedule"


def fetch(cluster: str) -> str:
    """(late 0.3) Ask for the backend holding a lock."""
    return f"cluster.{cluster_token(cluster)}.fetch"


def terminate(cluster: str, backend: str) -> str:
    return f"cluster.{cluster_token(cluster)}.backend.{backend}.terminate"


def drain(cluster: str, drone: str) -> str:
    return f"cluster.{cluster_token(cluster)}.drone.{drone}.drain"


def drone_status(drone: str) -> str:
    return f"drone.{drone}.status"


def drone_spawn(drone: str) -> str:
    return f"drone.{drone}.spawn"


def drone_fence(drone: str) -> str:
    """(ext) Controller → drone: stop these backends, their end is already stored."""
    return f"drone.{drone}.fence"


def update_backend_state(cluster: str, backend: str) -> str:
    """Drone → controller: one backend's new state, acknowledged once stored."""
    return f"cluster.{cluster_token(cluster)}.backend.{backend}.status"


def drone_register(drone: str) -> str:
    """(ext) Drone → controllers: `DroneConnectRequest` on a subject that names the drone."""
    return f"drone.{drone}.register"


def drone_update_backend_state(cluster: str, drone: str, backend: str) -> str:
    """(ext) `update_backend_state` on a subject that names the reporting drone."""
    return f"cluster.{cluster_token(cluster)}.drone.{drone}.backend.{backend}.status"


def drone_dns_record(cluster: str, drone: str, kind: str) -> str:
    """(ext) `dns_record` on a subject that names the drone that sets it."""
    return f"cluster.{cluster_token(cluster)}.drone.{drone}.dns.{kind}"


def drone_acme(cluster: str, drone: str) -> str:
    """(ext) `acme.set_dns_record` on a subject that names the drone."""
    return f"cluster.{cluster_token(cluster)}.drone.{drone}.acme"


def drone_of(subject: str) -> str | None:
    """The drone an identity-carrying subject names (None: a subject that names none)."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[0] == "drone" and parts[2] in ("status", "register"):
        return parts[1]
    if len(parts) >= 5 and parts[0] == "cluster" and parts[2] == "drone":
        return parts[3]
    return None


def backend_status(backend: str) -> str:
    """Controller → JetStream `backend_status`: the stored state history of one backend."""
    return f"backend.{backend}.status"


def backend_log(backend: str) -> str:
    return f"backend.{backend}.log"


def backend_stats(backend: str) -> str:
    return f"backend.{backend}.stats"


def dns_record(cluster: str, kind: str) -> str:
    return f"cluster.{cluster_token(cluster)}.dns.{kind}"


def list_drones(cluster: str) -> str:
    """(ext) Ask a controller for the drones of a cluster."""
    return f"cluster.{cluster_token(cluster)}.drones"


def list_backends(cluster: str) -> str:
    """(ext) Ask a controller for the backends of a cluster."""
    return f"cluster.{cluster_token(cluster)}.backends"


def token_at(subject: str, index: int) -> str | None:
    """One token of a subject, or None when the subject is shorter."""
    parts = subject.split(".")
    return parts[index] if 0 <= index < len(parts) else None
