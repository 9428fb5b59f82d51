"""Malformed requests get a clear answer, and the controller keeps serving."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.service import Controller
from shared import bus, subjects
from shared.protocol import BackendState, Executable, ScheduleRequest
from tests.controller.conftest import CLUSTER, MakeDrone
from tests.controller.sim import wait_drones_ready

VALID = {"cluster": CLUSTER, "executable": {"image": "img:1"}}


async def raw_schedule(nc: bus.NatsClient, payload: bytes, cluster: str = CLUSTER) -> Any:
    reply = await nc.request(subjects.schedule(cluster), payload, timeout=10)
    return json.loads(reply.data)


def with_fields(**fields: Any) -> bytes:
    return json.dumps({**VALID, **fields}).encode()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "invalid JSON"),
        (b"[1, 2]", "expected an object"),
        (json.dumps({"cluster": CLUSTER}).encode(), "executable: missing required field"),
        (with_fields(executable={"env": {}}), "executable.image: missing required field"),
        (with_fields(executable={"image": 7}), "executable.image: expected a string"),
        (with_fields(executable={"image": ""}), "executable.image"),
        (with_fields(backend_id="Not_A_Label"), "backend_id: must be 1-63 characters"),
        (with_fields(backend_id="-x"), "backend_id: must be 1-63 characters"),
        (with_fields(max_idle_secs=-1), "max_idle_secs"),
        (with_fields(executable={"image": "i", "pull_policy": "Sometimes"}), "pull_policy"),
        (with_fields(cluster="other.test"), "does not match the subject"),
        (with_fields(cluster="bad cluster!"), "cluster: must be a domain name"),
        # Image names that are no image reference never reach a drone.
        (with_fields(executable={"image": "/etc/passwd"}), "executable.image: '/etc/passwd'"),
        (with_fields(executable={"image": "img;rm -rf /"}), "is not an image reference"),
        (with_fields(executable={"image": "http://evil.example/x"}), "is not an image reference"),
        (with_fields(executable={"image": "//x"}), "is not an image reference"),
        (with_fields(executable={"image": "\u0000"}), "is not an image reference"),
        # A pattern that matched before a final newline; numbers no timer can hold.
        (with_fields(backend_id="abc\n"), "backend_id: must be 1-63 characters"),
        (with_fields(max_idle_secs=2**64), "max_idle_secs: expected an integer <= 2147483647"),
        (with_fields(max_idle_secs=10**100), "max_idle_secs: expected an integer <="),
        # Sizes: a cluster name is a domain name; metadata and env are bounded.
        (with_fields(cluster="c" * 1_000_000), "cluster: expected a string of length <= 259"),
        (with_fields(metadata={str(i): "v" for i in range(65)}), "metadata: expected an object"),
        (
            with_fields(executable={"image": "i", "volume_mounts": [{"Type": "bind"}]}),
            "executable.volume_mounts.0: Target must be an absolute path",
        ),
    ],
)
async def test_malformed_schedule_requests_get_invalid_request(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone, payload: bytes, says: str
) -> None:
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)

    reply = await raw_schedule(nc, payload)

    assert set(reply) == {"InvalidRequest"}, reply
    assert says in reply["InvalidRequest"]["message"]
    assert drone.offers == []
    # ... and the next good request is served as usual.
    good = await raw_schedule(nc, json.dumps(VALID).encode())
    assert good["Scheduled"]["drone"] == drone.drone_id


async def test_a_controller_for_some_clusters_ignores_others(
    nc: bus.NatsClient, start_controller: Any, make_drone: MakeDrone
) -> None:
    await start_controller(clusters=[CLUSTER])
    ours = await make_drone()
    theirs = await make_drone(cluster="elsewhere.test")
    await wait_drones_ready(nc, CLUSTER, ours)
    # Nobody serves the other cluster: the request finds no responder at all,
    # rather than a wrong answer from a controller that does not serve it.
    request = ScheduleRequest(cluster="elsewhere.test", executable=Executable(image="i"))
    with pytest.raises(bus.NoResponders):
        await bus.request(nc, subjects.schedule("elsewhere.test"), request, Any, timeout=5)
    assert theirs.offers == []
    good = await raw_schedule(nc, json.dumps(VALID).encode())
    assert good["Scheduled"]["drone"] == ours.drone_id


async def test_bad_heartbeats_and_updates_are_dropped_and_the_rest_goes_on(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    # A heartbeat that is not JSON, one with a bad IP, a registration missing fields.
    await nc.publish(subjects.drone_status("junk"), b"\x00\xff")
    await nc.publish(
        subjects.drone_status("bad-ip"),
        json.dumps({"drone_id": "bad-ip", "cluster": CLUSTER, "ready": True, "ip": "x"}).encode(),
    )
    await nc.publish(subjects.DRONE_REGISTER, b'{"drone_id": "half"}')
    # A state update that is not a state update, and one whose subject lies.
    bad = await nc.request(
        subjects.update_backend_state(CLUSTER, "b1"), b'{"state": "Sideways"}', timeout=5
    )
    assert "InvalidRequest" in json.loads(bad.data)
    update = {
        "cluster": CLUSTER,
        "state": "Ready",
        "backend": "other-backend",
        "time": "2026-01-01T00:00:00Z",
        "drone": "liar",
    }
    wrong_subject = await nc.request(
        subjects.update_backend_state(CLUSTER, "b1"), json.dumps(update).encode(), timeout=5
    )
    message = json.loads(wrong_subject.data)["InvalidRequest"]["message"]
    assert "do not match the subject" in message
    # A listing request with a body that is not JSON gets an error, not silence.
    odd = await nc.request(subjects.list_drones(CLUSTER), b"{", timeout=5)
    assert "InvalidRequest" in json.loads(odd.data)

    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    good = await raw_schedule(nc, json.dumps(VALID).encode())
    backend = good["Scheduled"]["backend_id"]
    assert await drone.report(backend, BackendState.LOADING) is None
    listed = await nc.request(subjects.list_drones(CLUSTER), b"null", timeout=5)
    assert [d["drone_id"] for d in json.loads(listed.data)] == [drone.drone_id]
