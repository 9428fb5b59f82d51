"""Why each backend ended, as stored on the state stream and counted by reason."""

from __future__ import annotations

import pytest

from controller.service import Controller
from shared import bus, subjects, wire
from shared.protocol import BackendState, UpdateBackendStateMessage, utc_now
from tests.controller.conftest import CLUSTER, MakeDrone, StartController
from tests.controller.sim import eventually, wait_drones_ready
from tests.controller.test_states import stored


def ends(controller: Controller, state: str, reason: str) -> float:
    value = controller.metrics.registry.get_sample_value(
        "plane_controller_backend_ends_total", {"state": state, "reason": reason}
    )
    return value or 0.0


async def report(nc: bus.NatsClient, drone: str, backend: str, state: BackendState, **ext: object):
    update = UpdateBackendStateMessage(
        cluster=CLUSTER, state=state, backend=backend, time=utc_now(), drone=drone, **ext
    )
    subject = subjects.drone_update_backend_state(CLUSTER, drone, backend)
    return await nc.request(subject, wire.encode(update), timeout=5)


@pytest.mark.parametrize(
    ("state", "reason", "code"),
    [
        (BackendState.FAILED, "error", 3),
        (BackendState.EXITED, "exited", 0),
        (BackendState.SWEPT, "swept", None),
        (BackendState.TERMINATED, "lifetime", None),
    ],
)
async def test_a_drones_reason_is_stored_with_the_end_and_counted(
    nc: bus.NatsClient,
    controller: Controller,
    make_drone: MakeDrone,
    state: BackendState,
    reason: str,
    code: int | None,
) -> None:
    drone = await make_drone()
    await report(nc, drone.drone_id, "b-why", BackendState.READY, reason="ignored", exit_code=9)
    await report(nc, drone.drone_id, "b-why", state, reason=reason, exit_code=code)
    ready, ended = await stored(nc, "b-why")
    assert (ready.reason, ready.exit_code) == (None, None)  # only ends say why
    assert (ended.state, ended.reason, ended.exit_code) == (state, reason, code)
    assert ends(controller, state.value, reason) == 1


async def test_a_strange_reason_is_stored_but_counted_as_unknown(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    await report(nc, drone.drone_id, "b-odd", BackendState.FAILED, reason="cosmic-ray")
    [ended] = await stored(nc, "b-odd")
    assert ended.reason == "cosmic-ray"
    assert ends(controller, "Failed", "unknown") == 1


async def test_backends_lost_with_their_drone_say_lost(
    nc: bus.NatsClient, start_controller: StartController, make_drone: MakeDrone
) -> None:
    controller = await start_controller(lost_after_secs=1.0)
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    await report(nc, drone.drone_id, "b-gone", BackendState.READY)
    drone.stop_heartbeats()

    async def lost() -> bool:
        return (await stored(nc, "b-gone"))[-1].state is BackendState.LOST

    await eventually(lost, what="b-gone to be stored as Lost")
    assert (await stored(nc, "b-gone"))[-1].reason == "lost"
    assert ends(controller, "Lost", "lost") == 1
