"""Identity from the subject: a drone speaks only for itself and of its own backends.

Without NATS permissions anyone may publish anything; these tests show what
the controller refuses even then, and what each refusal costs: a clear
reason, a count in `plane_controller_refused_total{reason}`, and nothing
else disturbed.
"""

from __future__ import annotations

import time
from typing import Any

from controller.dnsrecords import zone_of
from controller.identity import Refusal
from controller.service import Controller
from shared import bus, subjects
from shared.protocol import (
    BackendState,
    DnsRecordKind,
    DroneConnectRequest,
    DroneStatusMessage,
    SetDnsRecord,
    UpdateBackendStateMessage,
    utc_now,
)
from tests.controller.conftest import CLUSTER, MakeDrone
from tests.controller.sim import eventually, wait_drones_ready
from tests.controller.test_states import stored


def refused(controller: Controller, reason: Refusal) -> float:
    value = controller.metrics.registry.get_sample_value(
        "plane_controller_refused_total", {"reason": reason.value}
    )
    return value or 0.0


async def until_refused(controller: Controller, reason: Refusal, count: float) -> None:
    async def counted() -> bool:
        return refused(controller, reason) >= count

    await eventually(counted, what=f"{count:g} refusal(s) for {reason.value}")


async def test_a_heartbeat_or_registration_for_another_drone_is_refused(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    victim = await make_drone(ip="198.51.100.7")
    await wait_drones_ready(nc, CLUSTER, victim)
    # On the forger's own subjects, claiming to be the victim.
    forged_status = DroneStatusMessage(
        drone_id=victim.drone_id, cluster=CLUSTER, ready=False, ip="203.0.113.66"
    )
    await bus.publish(nc, subjects.drone_status("forger"), forged_status)
    forged_register = DroneConnectRequest(
        drone_id=victim.drone_id, cluster=CLUSTER, ip="203.0.113.66"
    )
    await bus.publish(nc, subjects.drone_register("forger"), forged_register)
    await until_refused(controller, Refusal.SUBJECT_MISMATCH, 2)

    assert controller.registry.ip_of(victim.drone_id) == "198.51.100.7"
    record = controller.registry.get(victim.drone_id)
    assert record is not None and record.ready
    assert controller.registry.get("forger") is None


async def test_a_drone_reports_only_its_own_backends_on_its_own_subject(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    owner = await make_drone()
    other = await make_drone()
    await owner.report("b-owned", BackendState.LOADING)
    await owner.report("b-owned", BackendState.READY)

    async def send(subject: str, drone: str, state: BackendState) -> Any:
        update = UpdateBackendStateMessage(
            cluster=CLUSTER, state=state, backend="b-owned", time=utc_now(), drone=drone
        )
        return await bus.request(nc, subject, update, Any, timeout=5)

    # Another drone, on its own subject, for a backend that is not its own.
    theirs = subjects.drone_update_backend_state(CLUSTER, other.drone_id, "b-owned")
    reply = await send(theirs, other.drone_id, BackendState.TERMINATED)
    assert f"runs on drone {owner.drone_id}" in reply["InvalidRequest"]["message"]
    # Another drone, on its own subject, pretending to be the owner.
    reply = await send(theirs, owner.drone_id, BackendState.TERMINATED)
    assert "on the subject of drone" in reply["InvalidRequest"]["message"]

    assert [m.state for m in await stored(nc, "b-owned")] == [
        BackendState.LOADING,
        BackendState.READY,
    ]
    assert refused(controller, Refusal.NOT_OWNER) == 1
    assert refused(controller, Refusal.SUBJECT_MISMATCH) == 1
    # The owner goes on as usual.
    assert await owner.report("b-owned", BackendState.SWEPT) is None


async def test_a_drone_sets_dns_records_only_for_its_backends_at_its_address(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    owner = await make_drone(ip="198.51.100.7")
    other = await make_drone(ip="198.51.100.8")
    await wait_drones_ready(nc, CLUSTER, owner, other)
    await owner.report("b-dns", BackendState.LOADING)
    await owner.report("b-dns", BackendState.READY)

    def a_record(name: str, value: str) -> SetDnsRecord:
        return SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.A, name=name, value=value)

    txt = SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.TXT, name="www", value="x")
    hijacks = [
        (other.drone_id, a_record("b-dns", "198.51.100.8")),  # someone else's backend
        (owner.drone_id, a_record("b-dns", "203.0.113.66")),  # its own, but elsewhere
        (owner.drone_id, a_record("not-a-backend", "198.51.100.7")),
        (owner.drone_id, txt),  # TXT records are for ACME challenges only
    ]
    for drone, record in hijacks:
        await bus.publish(nc, subjects.drone_dns_record(CLUSTER, drone, record.kind.value), record)
    await until_refused(controller, Refusal.BAD_RECORD, len(hijacks))
    zone = zone_of(CLUSTER)
    assert controller.records.address(zone, "b-dns", time.monotonic()) is None

    await bus.publish(
        nc,
        subjects.drone_dns_record(CLUSTER, owner.drone_id, "A"),
        a_record("b-dns", "198.51.100.7"),
    )

    async def served() -> bool:
        return controller.records.address(zone, "b-dns", time.monotonic()) == "198.51.100.7"

    await eventually(served, what="the owner's own record")
    assert refused(controller, Refusal.BAD_RECORD) == len(hijacks)


async def test_a_drone_speaking_the_0_3_subjects_still_works_with_auth_off(
    nc: bus.NatsClient, controller: Controller
) -> None:
    """Registration, states and DNS records on the subjects that name no drone."""
    connect = DroneConnectRequest(drone_id="old-drone", cluster=CLUSTER, ip="198.51.100.9")
    await bus.publish(nc, subjects.DRONE_REGISTER, connect)
    status = DroneStatusMessage(drone_id="old-drone", cluster=CLUSTER, ready=True)
    await bus.publish(nc, subjects.drone_status("old-drone"), status)
    for state in (BackendState.LOADING, BackendState.READY):
        update = UpdateBackendStateMessage(
            cluster=CLUSTER, state=state, backend="b-old", time=utc_now(), drone="old-drone"
        )
        reply = await bus.request(
            nc, subjects.update_backend_state(CLUSTER, "b-old"), update, Any, timeout=5
        )
        assert reply is None
    record = SetDnsRecord(cluster=CLUSTER, kind=DnsRecordKind.A, name="b-old", value="198.51.100.9")
    await bus.publish(nc, subjects.dns_record(CLUSTER, "A"), record)

    async def known() -> bool:
        return (
            controller.registry.ip_of("old-drone") == "198.51.100.9"
            and controller.records.address(zone_of(CLUSTER), "b-old", time.monotonic())
            == "198.51.100.9"
        )

    await eventually(known, what="the 0.3 drone's registration and record")
    assert [m.state for m in await stored(nc, "b-old")] == [
        BackendState.LOADING,
        BackendState.READY,
    ]
