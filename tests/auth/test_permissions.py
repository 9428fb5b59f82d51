"""Every role may do its own job and nothing else, on a real nats-server with `plane auth`'s files.

One row per (who, action, subject): allowed rows draw no permission
violation from the server, forbidden rows draw one. The attacks a plain NATS
client tried before permissions existed are rows too.
"""

from __future__ import annotations

import pytest

from shared import roles, subjects
from shared.ids import cluster_token
from tests.auth.conftest import CLUSTER, Connect

C = cluster_token(CLUSTER)
A, B = "drone-a", "drone-b"
ALLOW, DENY = True, False

PUBLISH = [
    # A client schedules, terminates, lists, reads the streams.
    ("client", subjects.schedule(CLUSTER), ALLOW),
    ("client", subjects.terminate(CLUSTER, "b1"), ALLOW),
    ("client", subjects.list_drones(CLUSTER), ALLOW),
    ("client", "$JS.API.STREAM.INFO.backend_status", ALLOW),
    ("client", "$JS.API.CONSUMER.CREATE.backend_log.c1.backend.b1.log", ALLOW),
    # ... and forges nothing: a Terminated of a drone, a registration, a heartbeat,
    ("client", subjects.update_backend_state(CLUSTER, "b1"), DENY),
    ("client", subjects.drone_update_backend_state(CLUSTER, A, "b1"), DENY),
    ("client", subjects.DRONE_REGISTER, DENY),
    ("client", subjects.drone_register(A), DENY),
    ("client", subjects.drone_status(A), DENY),
    # a stored state, a drain, a spawn, a fence, DNS,
    ("client", subjects.backend_status("b1"), DENY),
    ("client", subjects.drain(CLUSTER, A), DENY),
    ("client", subjects.drone_spawn(A), DENY),
    ("client", subjects.drone_fence(A), DENY),
    ("client", subjects.dns_record(CLUSTER, "A"), DENY),
    ("client", subjects.ACME_SET_DNS_RECORD, DENY),
    # another cluster's requests, or a stream's end.
    ("client", subjects.schedule("other.test"), DENY),
    ("client", "$JS.API.STREAM.DELETE.backend_status", DENY),
    ("client", "$JS.API.STREAM.PURGE.backend_status", DENY),
    ("client", "$JS.API.STREAM.CREATE.backend_status", DENY),
    # An admin does what a client does, drains, sets ACME records, manages streams.
    ("admin", subjects.drain(CLUSTER, A), ALLOW),
    ("admin", subjects.ACME_SET_DNS_RECORD, ALLOW),
    ("admin", "$JS.API.STREAM.PURGE.backend_log", ALLOW),
    ("admin", subjects.schedule(CLUSTER), ALLOW),
    ("admin", subjects.drone_status(A), DENY),
    ("admin", subjects.drone_spawn(A), DENY),
    ("admin", subjects.backend_status("b1"), DENY),
    # A drone speaks for itself only,
    (A, subjects.drone_status(A), ALLOW),
    (A, subjects.drone_register(A), ALLOW),
    (A, subjects.drone_update_backend_state(CLUSTER, A, "b1"), ALLOW),
    (A, subjects.drone_dns_record(CLUSTER, A, "A"), ALLOW),
    (A, subjects.drone_acme(CLUSTER, A), ALLOW),
    (A, subjects.backend_log("b1"), ALLOW),
    (A, subjects.backend_stats("b1"), ALLOW),
    (A, subjects.drone_status(B), DENY),
    (A, subjects.drone_register(B), DENY),
    (A, subjects.DRONE_REGISTER, DENY),
    (A, subjects.drone_update_backend_state(CLUSTER, B, "b1"), DENY),
    (A, subjects.update_backend_state(CLUSTER, "b1"), DENY),
    (A, subjects.drone_dns_record(CLUSTER, B, "A"), DENY),
    (A, subjects.dns_record(CLUSTER, "A"), DENY),
    (A, subjects.ACME_SET_DNS_RECORD, DENY),
    # and may not spawn, terminate, drain, schedule or touch the streams.
    (A, subjects.drone_spawn(A), DENY),
    (A, subjects.drone_spawn(B), DENY),
    (A, subjects.terminate(CLUSTER, "b1"), DENY),
    (A, subjects.drain(CLUSTER, A), DENY),
    (A, subjects.schedule(CLUSTER), DENY),
    (A, subjects.backend_status("b1"), DENY),
    (A, "$JS.API.STREAM.CREATE.backend_log", DENY),
    # A controller stores states, spawns and fences, owns its streams, no more.
    ("controller", subjects.backend_status("b1"), ALLOW),
    ("controller", subjects.drone_spawn(A), ALLOW),
    ("controller", subjects.drone_fence(A), ALLOW),
    ("controller", "$JS.API.STREAM.CREATE.backend_status", ALLOW),
    ("controller", subjects.dns_record(CLUSTER, "TXT"), ALLOW),
    ("controller", "$JS.API.STREAM.DELETE.backend_status", DENY),
    ("controller", subjects.drone_status(A), DENY),
    ("controller", subjects.drain(CLUSTER, A), DENY),
    ("controller", subjects.schedule(CLUSTER), DENY),
]

SUBSCRIBE = [
    ("client", "_INBOX.>", ALLOW),
    ("client", subjects.backend_status("*"), ALLOW),
    ("client", subjects.backend_log("*"), ALLOW),
    ("client", subjects.backend_stats("*"), ALLOW),
    # No reading of others' replies or requests.
    ("client", "_INBOX_controller.>", DENY),
    ("client", f"_INBOX_drone_{A}.>", DENY),
    ("client", subjects.schedule(CLUSTER), DENY),
    ("client", subjects.drone_spawn(A), DENY),
    ("client", ">", DENY),
    ("admin", "_INBOX.>", ALLOW),
    ("admin", subjects.backend_log("*"), ALLOW),
    ("admin", "_INBOX_controller.>", DENY),
    ("admin", subjects.drone_spawn(A), DENY),
    (A, subjects.drone_spawn(A), ALLOW),
    (A, subjects.drone_fence(A), ALLOW),
    (A, subjects.drain(CLUSTER, A), ALLOW),
    (A, subjects.terminate(CLUSTER, "*"), ALLOW),
    (A, f"_INBOX_drone_{A}.>", ALLOW),
    (A, subjects.drone_spawn(B), DENY),
    (A, f"_INBOX_drone_{B}.>", DENY),
    (A, "_INBOX.>", DENY),
    (A, subjects.schedule(CLUSTER), DENY),
    (A, subjects.drone_status("*"), DENY),
    ("controller", subjects.schedule(CLUSTER), ALLOW),
    ("controller", subjects.drone_status("*"), ALLOW),
    ("controller", subjects.drone_update_backend_state(CLUSTER, "*", "*"), ALLOW),
    ("controller", "_INBOX_controller.>", ALLOW),
    ("controller", "_INBOX.>", DENY),
    ("controller", f"_INBOX_drone_{A}.>", DENY),
]


def row_id(row: tuple[str, str, bool]) -> str:
    who, subject, allowed = row
    return f"{who}-{'may' if allowed else 'may-not'}-{subject}"


@pytest.mark.parametrize("row", PUBLISH, ids=row_id)
async def test_publish(connect_as: Connect, row: tuple[str, str, bool]) -> None:
    who, subject, allowed = row
    peer = await connect_as(who)
    await peer.nc.publish(subject, b"{}")
    violations = await peer.settled()
    if allowed:
        assert violations == []
    else:
        assert any(subject.lower() in v for v in violations), violations
    assert peer.nc.is_connected  # a refusal costs the connection nothing


@pytest.mark.parametrize("row", SUBSCRIBE, ids=row_id)
async def test_subscribe(connect_as: Connect, row: tuple[str, str, bool]) -> None:
    who, subject, allowed = row
    peer = await connect_as(who)
    await peer.nc.subscribe(subject)
    violations = await peer.settled()
    if allowed:
        assert violations == []
    else:
        assert any(subject.lower() in v for v in violations), violations


def test_every_role_is_covered_both_ways() -> None:
    for name in roles.ROLES:
        who = A if name == "drone" else name
        for table in (PUBLISH, SUBSCRIBE):
            outcomes = {allowed for w, _, allowed in table if w == who}
            assert outcomes == {ALLOW, DENY}, f"{name}: {outcomes}"
