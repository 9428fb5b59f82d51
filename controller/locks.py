"""Locks: one live backend per session key and cluster, decided from the lock table.

Pure. The table itself is a JetStream KV bucket (`controller.lockstore`): its
atomic create and compare-and-set by revision are what make "exactly once"
hold across any number of controllers, so no decision here needs a
controller's memory. A request reads the record and the backend index, and
`decide` says what to do; writes that lose a race are simply decided again.

A record names the backend chosen for the lock *before* any drone is asked
(with its bearer token), and the drone once one has taken it. Until then it
is a claim: other requests wait for it. A claim whose controller vanished
is taken over once no drone can still start its backend: every spawn carries
a deadline, so after `claim_timeout` the claim's backend runs only if the
index has heard of it (it is then adopted), and otherwise never will.

A lock is free again when the index holds its backend as ended (any terminal
state, `Lost` included): the next request replaces the record.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from controller.index import Entry
from shared.ids import cluster_token
from shared.protocol import Timestamp


class LockRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the lock table holds for one lock (JSON in the KV bucket)."""

    cluster: str
    lock: str
    backend_id: str
    claimed_at: Timestamp
    bearer_token: str | None = None
    drone: str | None = None  # None while claimed and no drone has taken it yet

    @property
    def claimed(self) -> bool:
        return self.drone is None


def lock_key(cluster: str, lock: str) -> str:
    """The KV key: `{cluster token}.{lock in base64url}`; KV keys may not hold `:`,
    which a lock and a cluster's port may (`=` stands for it in the cluster)."""
    encoded = base64.urlsafe_b64encode(lock.encode()).decode().rstrip("=")
    return f"{cluster_token(cluster).replace(':', '=')}.{encoded}"


class Action(enum.Enum):
    RETURN = "return"  # answer with the record's backend (spawned: false)
    WAIT = "wait"  # another request is placing the backend: read again shortly
    CLAIM = "claim"  # no record: create one (fails if another request got there first)
    REPLACE = "replace"  # the record's backend ended, or its claim was abandoned
    ADOPT = "adopt"  # an abandoned claim whose backend a drone runs: record that drone


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    why: str = ""
    drone: str | None = None  # for ADOPT: the drone the index has the backend on


def decide(
    record: LockRecord | None,
    holder: Entry | None,
    now: datetime,
    claim_timeout: timedelta,
) -> Decision:
    """What a schedule request for a lock does, given its record and the index's
    entry for the record's backend (None: the index has not heard of it)."""
    if record is None:
        return Decision(Action.CLAIM)
    if holder is not None and holder.state.terminal and not holder.reserved:
        return Decision(Action.REPLACE, f"its backend ended ({holder.state.value})")
    if not record.claimed:
        return Decision(Action.RETURN)
    if now - record.claimed_at < claim_timeout:
        return Decision(Action.WAIT, "another request is placing its backend")
    if holder is not None and holder.drone is not None and not holder.reserved:
        return Decision(Action.ADOPT, "an abandoned claim whose backend runs", holder.drone)
    return Decision(Action.REPLACE, "an abandoned claim: no drone can start its backend now")


def fetch_answer(record: LockRecord | None, holder: Entry | None) -> LockRecord | None:
    """The record a fetch returns (None: "NoBackendForLock"): only a live holder."""
    if record is None or record.claimed:
        return None
    if holder is not None and holder.state.terminal and not holder.reserved:
        return None
    return record


def releases(record: LockRecord, backend: str, ended: bool) -> bool:
    """Whether the state just stored for `backend` frees this record."""
    return ended and record.backend_id == backend
