"""Identifiers: the backend-ID rule, generated IDs, and cluster names as subject tokens.

A backend ID ends up as a DNS label, a NATS subject token and part of a Docker
container name, so one rule guards all three.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, NewType

import msgspec

BACKEND_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_BACKEND_ID_RE = re.compile(BACKEND_ID_PATTERN)
# A cluster is a domain name, optionally with a port; lowercase letters, digits,
# dashes and dots, so it is safe as a subject token once dots are replaced.
_CLUSTER_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]{1,5})?$"
)

BackendId = NewType("BackendId", str)
DroneId = NewType("DroneId", str)

# Wire type for a backend ID: msgspec enforces the rule while decoding.
WireBackendId = Annotated[str, msgspec.Meta(pattern=BACKEND_ID_PATTERN)]


class InvalidId(ValueError):
    """An ID or cluster name that breaks the naming rules."""


def new_id() -> str:
    """A fresh lowercase UUIDv4, the form every generated ID takes."""
    return str(uuid.uuid4())


def is_valid_backend_id(value: str) -> bool:
    return bool(_BACKEND_ID_RE.match(value))


def backend_id(value: str) -> BackendId:
    """Check a client-chosen backend ID against the DNS-label rule."""
    if not is_valid_backend_id(value):
        raise InvalidId(
            f"backend_id {value!r} must be 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return BackendId(value)


def is_valid_cluster(value: str) -> bool:
    return len(value) <= 253 and bool(_CLUSTER_RE.match(value))


def cluster_token(cluster: str) -> str:
    """The form a cluster name takes inside a NATS subject: dots become underscores."""
    if not is_valid_cluster(cluster):
        raise InvalidId(f"cluster {cluster!r} is not a domain name (optionally with :port)")
    return cluster.replace(".", "_")


def subject_token_ok(value: str) -> bool:
    """Whether a string can stand as one NATS subject token."""
    return bool(value) and not any(c in value for c in ". *>\t\r\n")
