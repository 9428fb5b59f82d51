"""The lock decisions (controller.locks), over every kind of record and holder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.index import Entry
from controller.locks import (
    Action,
    LockRecord,
    decide,
    fetch_answer,
    lock_key,
)
from shared.protocol import BackendState

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=17)


def record(*, drone: str | None = "d1", age: float = 0.0) -> LockRecord:
    return LockRecord(
        cluster="plane.test",
        lock="doc:1",
        backend_id="b1",
        claimed_at=NOW - timedelta(seconds=age),
        drone=drone,
    )


def holder(state: BackendState | None, *, drone: str | None = "d1", reserved: bool = False):
    if state is None:
        return None
    return Entry("b1", "plane.test", drone, state, NOW, reserved=reserved)


LIVE = (BackendState.LOADING, BackendState.STARTING, BackendState.READY)
ENDED = tuple(s for s in BackendState if s.terminal)


def test_no_record_is_claimed() -> None:
    assert decide(None, None, NOW, TIMEOUT).action is Action.CLAIM


@pytest.mark.parametrize("state", [None, *LIVE])
def test_a_held_lock_with_a_live_or_unheard_backend_is_returned(state: BackendState | None) -> None:
    assert decide(record(), holder(state), NOW, TIMEOUT).action is Action.RETURN


@pytest.mark.parametrize("state", ENDED)
@pytest.mark.parametrize("claimed", [False, True])
def test_a_lock_whose_backend_ended_is_taken_again(state: BackendState, claimed: bool) -> None:
    rec = record(drone=None if claimed else "d1")
    decision = decide(rec, holder(state), NOW, TIMEOUT)
    assert decision.action is Action.REPLACE
    assert state.value in decision.why


@pytest.mark.parametrize("state", [None, *LIVE])
def test_a_fresh_claim_is_waited_for(state: BackendState | None) -> None:
    rec = record(drone=None, age=TIMEOUT.total_seconds() - 1)
    assert decide(rec, holder(state), NOW, TIMEOUT).action is Action.WAIT


@pytest.mark.parametrize("state", LIVE)
def test_an_abandoned_claim_whose_backend_runs_is_adopted(state: BackendState) -> None:
    rec = record(drone=None, age=TIMEOUT.total_seconds())
    decision = decide(rec, holder(state, drone="d7"), NOW, TIMEOUT)
    assert decision.action is Action.ADOPT and decision.drone == "d7"


def test_an_abandoned_claim_nobody_runs_is_taken_again() -> None:
    rec = record(drone=None, age=TIMEOUT.total_seconds() + 5)
    assert decide(rec, None, NOW, TIMEOUT).action is Action.REPLACE
    # Reserved by a scheduler that never heard back: no drone reported it either.
    reserved = holder(BackendState.LOADING, drone="d7", reserved=True)
    assert decide(rec, reserved, NOW, TIMEOUT).action is Action.REPLACE


def test_a_reservation_is_not_an_end() -> None:
    """A terminal-looking entry that is only this controller's reservation ends nothing."""
    reserved = holder(BackendState.LOADING, reserved=True)
    assert decide(record(), reserved, NOW, TIMEOUT).action is Action.RETURN


@pytest.mark.parametrize("state", [None, *LIVE])
def test_fetch_answers_a_live_holder(state: BackendState | None) -> None:
    assert fetch_answer(record(), holder(state)) == record()


@pytest.mark.parametrize("state", [None, *LIVE, *ENDED])
def test_fetch_answers_nothing_for_a_claim(state: BackendState | None) -> None:
    assert fetch_answer(record(drone=None), holder(state)) is None


@pytest.mark.parametrize("state", ENDED)
def test_fetch_answers_nothing_for_an_ended_holder(state: BackendState) -> None:
    assert fetch_answer(record(), holder(state)) is None
    assert fetch_answer(None, None) is None


def test_lock_keys_are_valid_kv_keys_and_never_collide() -> None:
    locks = ["doc:1", "doc/1", "doc_1", "doc.1", "DOC:1", "a" * 128, "-", ":"]
    keys = {lock_key("plane.test", lock) for lock in locks}
    assert len(keys) == len(locks)
    for key in keys:
        assert key.startswith("plane_test.")
        assert all(c.isalnum() or c in "-_." for c in key), key
    assert lock_key("plane.test", "x") != lock_key("other.test", "x")
    assert lock_key("localhost:8080", "x").startswith("localhost=8080.")
