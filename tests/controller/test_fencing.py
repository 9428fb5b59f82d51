"""Which backends a drone's heartbeat shows it should no longer run: pure decisions."""

from __future__ import annotations

from datetime import timedelta

from controller.fencing import plan
from controller.index import BackendIndex
from shared.protocol import BackendState, BackendStateMessage, utc_now

C = "plane.test"
T0 = utc_now()


def indexed(*reports: tuple[str, BackendState, str, float]) -> BackendIndex:
    index = BackendIndex()
    for backend, state, drone, at in reports:
        index.apply(
            BackendStateMessage(
                cluster=C, state=state, backend=backend, drone=drone,
                time=T0 + timedelta(seconds=at),
            )
        )  # fmt: skip
    return index


def test_a_drone_that_still_runs_a_lost_backend_is_told_to_stop_that_life() -> None:
    index = indexed(("b", BackendState.READY, "d1", 0), ("b", BackendState.LOST, "d1", 30))
    decided = plan("d1", ["b"], index)
    [fence] = decided.fences
    assert (fence.backend, fence.since) == ("b", T0 + timedelta(seconds=30))
    assert "declared Lost" in fence.reason
    assert decided.cleared == []  # it still runs there: the ID stays held


def test_a_backend_placed_on_another_drone_is_stopped_where_it_should_not_run() -> None:
    index = indexed(("b", BackendState.LOADING, "d2", 5))
    [fence] = plan("d1", ["b"], index).fences
    assert (fence.backend, fence.since) == ("b", T0 + timedelta(seconds=5))
    assert "placed on drone d2" in fence.reason
    assert plan("d2", ["b"], index).fences == []


def test_live_unknown_and_otherwise_ended_backends_are_left_alone() -> None:
    index = indexed(
        ("mine", BackendState.READY, "d1", 0),
        ("swept", BackendState.SWEPT, "d1", 0),  # it reported its end: it is stopping it
        ("old-life", BackendState.LOST, "d2", 0),  # lost elsewhere: this is a new life here
    )
    assert plan("d1", ["mine", "swept", "old-life", "unknown"], index).fences == []


def test_a_heartbeat_without_a_held_backend_frees_its_id() -> None:
    index = indexed(("b", BackendState.LOST, "d1", 30), ("c", BackendState.LOST, "d1", 30))
    decided = plan("d1", ["c"], index)
    assert decided.cleared == ["b"]
    assert [f.backend for f in decided.fences] == ["c"]
