"""State updates reach the controller in order per backend, whatever the controller does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from drone.agent.metrics import AgentMetrics
from drone.agent.reporter import StatusReporter
from shared import bus, subjects
from shared.bus import NatsClient
from shared.protocol import (
    BackendState,
    ScheduleReply,
    UpdateBackendStateMessage,
    invalid_request,
)
from tests.drone.conftest import CLUSTER, Changes, ControllerSim, settle

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIFE = [BackendState.LOADING, BackendState.STARTING, BackendState.READY, BackendState.SWEPT]


def update(backend: str, state: BackendState, n: int = 0) -> UpdateBackendStateMessage:
    return UpdateBackendStateMessage(
        cluster=CLUSTER,
        state=state,
        backend=backend,
        time=T0 + timedelta(seconds=n),
        drone="drone-1",
    )


def sample(metrics: AgentMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, f"no metric {name}"
    return value


@pytest.fixture
async def reporter(nc: NatsClient) -> AsyncIterator[tuple[StatusReporter, AgentMetrics]]:
    metrics = AgentMetrics()
    sender = StatusReporter(nc, metrics, timeout=0.5, retry_max_secs=0.2)
    yield sender, metrics
    await sender.close()


async def test_updates_wait_for_an_absent_controller_and_arrive_in_order(
    nc: NatsClient, reporter: tuple[StatusReporter, AgentMetrics]
) -> None:
    sender, metrics = reporter
    for n, state in enumerate(LIFE):
        sender.report(update("b1", state, n))  # returns at once, with nobody listening
    assert sender.pending == 4
    assert await sender.flush(timeout=0.5) is False
    assert sample(metrics, "plane_drone_status_delivery_retries_total") >= 1
    sim = await ControllerSim(nc).start()
    try:
        assert await sender.flush(timeout=10) is True
        assert sim.history("b1") == LIFE
        assert [u.time for u in sim.updates] == [T0 + timedelta(seconds=n) for n in range(4)]
    finally:
        await sim.stop()


async def test_a_resend_request_is_retried_and_a_refusal_is_dropped(
    nc: NatsClient, reporter: tuple[StatusReporter, AgentMetrics]
) -> None:
    sender, metrics = reporter
    seen: list[tuple[str, BackendState]] = []
    changes = Changes()

    async def answer(msg: UpdateBackendStateMessage, subject: str) -> ScheduleReply | None:
        seen.append((msg.backend, msg.state))
        changes.notify()
        if msg.backend == "flaky" and seen.count(("flaky", msg.state)) == 1:
            return invalid_request("not stored, send again: stream unavailable")
        if msg.backend == "refused" and msg.state is BackendState.LOADING:
            return invalid_request("cluster: does not match the subject")
        return None

    endpoint = await bus.serve(
        nc, subjects.DRONE_BACKEND_STATUS_ALL, UpdateBackendStateMessage, answer
    )
    await settle(nc)
    try:
        sender.report(update("flaky", BackendState.LOADING))
        sender.report(update("refused", BackendState.LOADING))
        sender.report(update("refused", BackendState.STARTING, 1))
        assert await sender.flush(timeout=10) is True
    finally:
        await endpoint.stop()
    assert seen.count(("flaky", BackendState.LOADING)) == 2
    assert seen.count(("refused", BackendState.LOADING)) == 1
    assert ("refused", BackendState.STARTING) in seen
    assert sample(metrics, "plane_drone_status_delivery_dropped_total") == 1


async def test_a_stuck_backend_does_not_hold_up_the_others(
    nc: NatsClient, reporter: tuple[StatusReporter, AgentMetrics]
) -> None:
    sender, _ = reporter
    delivered: list[str] = []
    changes = Changes()
    release = asyncio.Event()

    async def answer(msg: UpdateBackendStateMessage, subject: str) -> None:
        if msg.backend == "stuck":
            await release.wait()  # longer than the reporter's timeout: it tries again
        delivered.append(msg.backend)
        changes.notify()
        return None

    endpoint = await bus.serve(
        nc, subjects.DRONE_BACKEND_STATUS_ALL, UpdateBackendStateMessage, answer
    )
    await settle(nc)
    try:
        sender.report(update("stuck", BackendState.LOADING))
        for n in range(5):
            sender.report(update(f"free-{n}", BackendState.LOADING))
        await changes.until(lambda: len(delivered) >= 5, 10, "the free backends' updates")
        assert "stuck" not in delivered
        release.set()
        assert await sender.flush(timeout=10) is True
    finally:
        release.set()
        await endpoint.stop()
