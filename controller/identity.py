"""Who may say what: the checks that pin a drone's messages to its own identity.

NATS does not tell a subscriber who published a message, so where identity
matters the subject carries it (`drone.{d}.status`, `drone.{d}.register`,
`cluster.{c}.drone.{d}.backend.{b}.status`, `cluster.{c}.drone.{d}.dns.*`),
NATS permissions let each drone publish only on subjects that name it
(docs/AUTH.md), and these checks make sure the body agrees with the subject
and the drone speaks only of its own backends. Pure: the index and the
drone's known IP are passed in.
"""

from __future__ import annotations

import enum

from controller.dnsrecords import ACME_CHALLENGE
from controller.index import Entry
from shared import subjects
from shared.ids import InvalidId, cluster_token
from shared.protocol import DnsRecordKind, SetDnsRecord, UpdateBackendStateMessage


class Refusal(enum.StrEnum):
    """Why a message was refused: the `reason` label of `plane_controller_refused_total`."""

    SUBJECT_MISMATCH = "subject_mismatch"  # the body speaks of another drone, backend or cluster
    NOT_OWNER = "not_owner"  # the backend runs on another drone
    ENDED = "ended"  # a report of a life that already ended
    BAD_RECORD = "bad_record"  # a DNS record the drone may not set
    REGISTRY_FULL = "registry_full"  # a new drone beyond max_drones


def claimed_drone(subject: str, drone: str) -> str | None:
    """Why a message about `drone` may not come on `subject` (None: it may)."""
    named = subjects.drone_of(subject)
    if named is not None and named != drone:
        return f"a message of drone {drone} on the subject of drone {named}"
    return None


def update_subject(msg: UpdateBackendStateMessage, subject: str) -> str | None:
    """Why an update does not match its subject: 0.3 `cluster.{c}.backend.{b}.status`
    or (ext) `cluster.{c}.drone.{d}.backend.{b}.status`."""
    try:
        cluster = cluster_token(msg.cluster)
    except InvalidId as exc:
        return f"cluster: {exc}"
    parts = subject.split(".")
    backend_at = 5 if len(parts) == 7 else 3
    if len(parts) > backend_at and parts[1] == cluster and parts[backend_at] == msg.backend:
        return claimed_drone(subject, msg.drone)
    return f"cluster and backend do not match the subject {subject!r}"


def dns_record(
    record: SetDnsRecord, drone: str, entry: Entry | None, drone_ip: str | None
) -> str | None:
    """Why `drone` may not set `record`: an A record only for a live backend of its own,
    pointing at its own address; a TXT record only for ACME challenges."""
    name = record.name.lower().rstrip(".")
    if record.kind is DnsRecordKind.TXT:
        if name.split(".")[0] != ACME_CHALLENGE:
            return f"a drone sets TXT records for {ACME_CHALLENGE} only, not {record.name!r}"
        return None
    backend = name.split(".")[0]
    if entry is None or entry.state.terminal or entry.drone != drone:
        return f"backend {backend} is not a live backend of drone {drone}"
    if drone_ip is not None and record.value != drone_ip:
        return f"drone {drone} is at {drone_ip}, not {record.value}"
    return None
