"""The backend index: which report wins, reservations, listings, pruning."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from controller.index import BackendIndex, admits, duplicate
from shared.protocol import BackendState, BackendStateMessage, utc_now

C = "plane.test"
T0 = utc_now()


def report(
    backend: str,
    state: BackendState,
    at: float = 0.0,
    drone: str | None = "d1",
    cluster: str = C,
) -> BackendStateMessage:
    return BackendStateMessage(
        cluster=cluster, state=state, backend=backend, time=T0 + timedelta(seconds=at), drone=drone
    )


def state_of(index: BackendIndex, backend: str) -> BackendState | None:
    entry = index.get(backend)
    return None if entry is None else entry.state


def test_states_move_forward_in_the_order_of_life() -> None:
    index = BackendIndex()
    assert index.apply(report("b", BackendState.LOADING, 0))
    assert index.apply(report("b", BackendState.READY, 2))
    # Out of order: an older Starting arrives late, or even with a later clock.
    assert not index.apply(report("b", BackendState.STARTING, 1))
    assert not index.apply(report("b", BackendState.STARTING, 5))
    assert state_of(index, "b") == BackendState.READY
    assert index.apply(report("b", BackendState.SWEPT, 6))
    assert state_of(index, "b") == BackendState.SWEPT


def test_a_terminal_state_changes_only_for_a_later_report() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.LOST, 10))
    assert not index.apply(report("b", BackendState.READY, 5))  # old news
    assert index.apply(report("b", BackendState.TERMINATED, 11))  # later word of its end
    assert index.apply(report("b", BackendState.LOADING, 20))  # a new life of the ID
    assert state_of(index, "b") == BackendState.LOADING


def test_the_same_report_twice_changes_nothing_the_second_time() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.READY, 1))
    before = index.backends(C)
    index.apply(report("b", BackendState.READY, 1))
    assert index.backends(C) == before
    assert index.count_by_state()[BackendState.READY] == 1


def test_a_live_id_cannot_be_reserved_and_a_finished_one_can() -> None:
    index = BackendIndex()
    index.apply(report("live", BackendState.STARTING))
    index.apply(report("done", BackendState.EXITED))
    blocking = index.reserve("live", C, T0)
    assert blocking is not None and blocking.state == BackendState.STARTING
    assert index.reserve("done", C, T0) is None
    assert index.reserve("fresh", C, T0) is None
    assert index.reserve("fresh", C, T0) is not None  # reserved is live


def test_a_reservation_is_listed_under_its_drone_and_released_if_nobody_took_it() -> None:
    index = BackendIndex()
    index.reserve("r", C, T0)
    index.assign("r", "d1")
    assert [e.backend for e in index.live_on("d1")] == ["r"]
    index.assign("r", "d2")  # refused by d1, offered to d2
    assert index.live_on("d1") == [] and [e.backend for e in index.live_on("d2")] == ["r"]
    index.release("r")
    assert index.get("r") is None and index.live_on("d2") == []


def test_a_report_replaces_a_reservation_and_release_then_keeps_it() -> None:
    index = BackendIndex()
    index.reserve("r", C, T0 + timedelta(seconds=5))
    index.assign("r", "d1")
    # The drone's clock is behind ours: its report still replaces the placeholder.
    assert index.apply(report("r", BackendState.LOADING, 0, drone="d1"))
    index.release("r")
    assert state_of(index, "r") == BackendState.LOADING


def test_listings_hold_live_backends_of_one_cluster_sorted() -> None:
    index = BackendIndex()
    index.apply(report("b2", BackendState.READY))
    index.apply(report("b1", BackendState.LOADING))
    index.apply(report("b3", BackendState.FAILED))
    index.apply(report("x1", BackendState.READY, drone="d9", cluster="other.test"))
    assert [b.backend_id for b in index.backends(C)] == ["b1", "b2"]
    assert index.clusters() == {C, "other.test"}
    assert index.live_drones() == {"d1": C, "d9": "other.test"}


def test_a_report_without_a_drone_keeps_the_known_one() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.LOADING, 0, drone="d1"))
    index.apply(report("b", BackendState.READY, 1, drone=None))
    entry = index.get("b")
    assert entry is not None and entry.drone == "d1"


def test_old_terminal_entries_are_pruned() -> None:
    index = BackendIndex()
    index.apply(report("old", BackendState.EXITED, 0))
    index.apply(report("recent", BackendState.EXITED, 3000))
    index.apply(report("live", BackendState.READY, 0))
    now: datetime = T0 + timedelta(seconds=3600)
    assert index.prune(now, timedelta(seconds=1800)) == 1
    assert index.get("old") is None
    assert index.get("recent") is not None and index.get("live") is not None
    counts = index.count_by_state()
    assert counts[BackendState.EXITED] == 1 and counts[BackendState.READY] == 1


def test_a_lost_backend_holds_its_id_until_its_drone_is_heard_without_it() -> None:
    index = BackendIndex(lost_hold=timedelta(hours=1))
    index.apply(report("b", BackendState.READY, 0, drone="d1"))
    index.apply(report("b", BackendState.LOST, 30, drone="d1"))
    in_the_way = index.reserve("b", C, T0 + timedelta(seconds=40))
    assert in_the_way is not None and in_the_way.state is BackendState.LOST
    assert [e.backend for e in index.held_on("d1")] == ["b"]
    index.clear_lost("b")
    assert index.held_on("d1") == []
    assert index.reserve("b", C, T0 + timedelta(seconds=41)) is None


def test_of_two_lost_times_the_first_heard_stays_until_the_stored_one_settles_it() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.READY, 0))
    assert index.apply(report("b", BackendState.LOST, 30))  # one controller's
    later, earlier = report("b", BackendState.LOST, 31), report("b", BackendState.LOST, 29)
    for other in (later, earlier):  # another's, either side of it
        assert index.contests(other)
        assert not index.apply(other)
    assert not index.contests(report("b", BackendState.LOST, 30))  # the same one again
    assert not index.contests(report("b", BackendState.TERMINATED, 31))

    assert index.settle(earlier)  # read back from the stream
    entry = index.get("b")
    assert entry is not None and (entry.state, entry.time) == (BackendState.LOST, earlier.time)
    assert [e.backend for e in index.held_on("d1")] == ["b"]
    assert not index.settle(earlier)


def test_settling_the_lost_time_leaves_a_hold_that_ended_ended() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.LOST, 30))
    index.clear_lost("b")
    assert index.settle(report("b", BackendState.LOST, 29))
    assert index.held_on("d1") == []
    assert index.count_by_state()[BackendState.LOST] == 1


def test_a_stored_state_that_contests_nothing_is_applied_as_any_other() -> None:
    index = BackendIndex()
    assert index.settle(report("b", BackendState.READY, 0))
    assert not index.settle(report("b", BackendState.STARTING, 1))
    assert index.settle(report("b", BackendState.LOST, 2))
    assert state_of(index, "b") == BackendState.LOST


def test_a_lost_hold_ends_on_its_own_for_a_drone_that_never_returns() -> None:
    index = BackendIndex(lost_hold=timedelta(minutes=5))
    index.apply(report("b", BackendState.LOST, 0, drone="d1"))
    assert index.reserve("b", C, T0 + timedelta(minutes=4)) is not None
    assert index.reserve("b", C, T0 + timedelta(minutes=6)) is None


def test_other_ends_hold_nothing() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.SWEPT, 0, drone="d1"))
    assert index.held_on("d1") == []
    assert index.reserve("b", C, T0 + timedelta(seconds=1)) is None


@pytest.mark.parametrize(
    ("held", "state", "drone", "at", "refused"),
    [
        (None, BackendState.READY, "d1", 5, None),  # unknown: the first report
        ((BackendState.READY, "d1"), BackendState.SWEPT, "d1", 5, None),
        ((BackendState.READY, "d1"), BackendState.SWEPT, "d2", 5, "runs on drone d1, not d2"),
        ((BackendState.LOST, "d1"), BackendState.SWEPT, "d1", 50, "already ended as Lost"),
        ((BackendState.LOST, "d1"), BackendState.READY, "d1", 50, "already ended as Lost"),
        ((BackendState.LOST, "d1"), BackendState.LOADING, "d1", 50, None),  # a new life
        ((BackendState.LOST, "d1"), BackendState.LOADING, "d1", 1, "already ended"),
        ((BackendState.SWEPT, "d1"), BackendState.LOADING, "d2", 50, None),
    ],
)
def test_which_reports_the_stream_admits(
    held: tuple[BackendState, str] | None,
    state: BackendState,
    drone: str,
    at: float,
    refused: str | None,
) -> None:
    index = BackendIndex()
    if held is not None:
        index.apply(report("b", held[0], 10, drone=held[1]))
    why = admits(index.get("b"), state, drone, T0 + timedelta(seconds=at))
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_a_reservation_admits_only_the_drone_it_was_offered_to() -> None:
    index = BackendIndex()
    index.reserve("b", C, T0)
    assert admits(index.get("b"), BackendState.LOADING, "d9", T0) is None  # not offered yet
    index.assign("b", "d2")
    assert admits(index.get("b"), BackendState.LOADING, "d2", T0) is None
    assert "runs on drone d2" in (admits(index.get("b"), BackendState.LOADING, "d1", T0) or "")


def test_a_resend_is_a_duplicate_and_a_new_report_is_not() -> None:
    index = BackendIndex()
    index.apply(report("b", BackendState.READY, 3, drone="d1"))
    when = T0 + timedelta(seconds=3)
    assert duplicate(index.get("b"), BackendState.READY, "d1", when)
    assert not duplicate(index.get("b"), BackendState.READY, "d1", when + timedelta(seconds=1))
    assert not duplicate(index.get("b"), BackendState.SWEPT, "d1", when)
    assert not duplicate(index.get("b"), BackendState.READY, "d2", when)
    assert not duplicate(None, BackendState.READY, "d1", when)
