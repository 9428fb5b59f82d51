"""Identifiers: the backend-ID, drone-ID and cluster rules, generated IDs, subject tokens.

A backend ID ends up as a DNS label, a NATS subject token and part of a Docker
container name, so one rule guards all three. Every pattern here must match
the whole value: the wire types carry them to msgspec, which searches rather
than matches, so each is anchored with `^` and `\\Z` (never `$`, which also
matches before a final newline).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, NewType

import msgspec

BACKEND_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
# A drone ID stands in subjects, Docker labels and (with auth) user names.
DRONE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}\Z"
# A cluster is a domain name, optionally with a port: letters, digits, dashes and
# dots, so it is safe as a subject token once dots are replaced.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
CLUSTER_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?\Z"
MAX_DOMAIN_LENGTH = 253
MAX_CLUSTER_LENGTH = MAX_DOMAIN_LENGTH + len(":65535")

_BACKEND_ID_RE = re.compile(BACKEND_ID_PATTERN)
_DRONE_ID_RE = re.compile(DRONE_ID_PATTERN)
_CLUSTER_RE = re.compile(CLUSTER_PATTERN)

BackendId = NewType("BackendId", str)
DroneId = NewType("DroneId", str)

# Wire types: msgspec enforces the rules while decoding. The ID patterns bound
# their own length; the cluster's is bounded first, so a hostile megabyte never
# reaches its pattern.
WireBackendId = Annotated[str, msgspec.Meta(pattern=BACKEND_ID_PATTERN)]
WireDroneId = Annotated[str, msgspec.Meta(pattern=DRONE_ID_PATTERN)]
WireCluster = Annotated[str, msgspec.Meta(max_length=MAX_CLUSTER_LENGTH, pattern=CLUSTER_PATTERN)]

# What a failed pattern means, for error messages that a person can act on.
PATTERN_MEANINGS = {
    BACKEND_ID_PATTERN: (
        "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
    ),
    DRONE_ID_PATTERN: "must be 1-128 characters of A-Z, a-z, 0-9, '_' and '-'",
    CLUSTER_PATTERN: (
        f"must be a domain name of at most {MAX_DOMAIN_LENGTH} characters, optionally with :port"
    ),
}


class InvalidId(ValueError):
    """An ID or cluster name that breaks the naming rules."""


def new_id() -> str:
    """A fresh lowercase UUIDv4, the form every generated ID takes."""
    return str(uuid.uuid4())


def is_valid_backend_id(value: str) -> bool:
    return len(value) <= 63 and _BACKEND_ID_RE.fullmatch(value) is not None


def backend_id(value: str) -> BackendId:
    """Check a client-chosen backend ID against the DNS-label rule."""
    if not is_valid_backend_id(value):
        raise InvalidId(f"backend_id {value[:80]!r} {PATTERN_MEANINGS[BACKEND_ID_PATTERN]}")
    return BackendId(value)


def is_valid_drone_id(value: str) -> bool:
    return len(value) <= 128 and _DRONE_ID_RE.fullmatch(value) is not None


def is_valid_cluster(value: str) -> bool:
    if len(value) > MAX_CLUSTER_LENGTH or _CLUSTER_RE.fullmatch(value) is None:
        return False
    host, _, _ = value.partition(":")
    return len(host) <= MAX_DOMAIN_LENGTH


def cluster_token(cluster: str) -> str:
    """The form a cluster name takes inside a NATS subject: dots become underscores."""
    if not is_valid_cluster(cluster):
        raise InvalidId(f"cluster {cluster[:80]!r} is not a domain name (optionally with :port)")
    return cluster.replace(".", "_")
