"""The backend state machine, as pure code: no Docker, no NATS, no clock."""

from __future__ import annotations

import itertools

import pytest

from drone.agent.state import (
    Adopted,
    ContainerExited,
    Created,
    DockerFailed,
    Event,
    Fenced,
    HoldRequests,
    IdleSwept,
    Instruction,
    LifetimeExpired,
    Machine,
    ProbeAnswered,
    Pulled,
    ReadyTimeout,
    RemoveContainer,
    Report,
    Route,
    RunStep,
    Spawned,
    Started,
    Step,
    TerminateRequested,
    Unroute,
    WatchStarting,
    handle,
)
from shared.protocol import BackendState, EndReason

L, S, R = BackendState.LOADING, BackendState.STARTING, BackendState.READY

EVERY_EVENT: list[Event] = [
    Spawned(),
    Adopted(),
    Adopted(exit_code=0),
    Adopted(exit_code=2),
    Pulled(),
    Created(),
    Started(),
    ProbeAnswered(),
    ContainerExited(0),
    ContainerExited(137),
    ReadyTimeout(),
    IdleSwept(),
    TerminateRequested(),
    TerminateRequested(hard=True),
    LifetimeExpired(),
    DockerFailed("engine gone"),
    Fenced("declared Lost"),
]


def test_a_spawn_runs_through_loading_starting_ready_and_swept() -> None:
    machine = Machine()
    steps: list[tuple[Event, BackendState, tuple[Instruction, ...]]] = [
        (Spawned(), L, (Report(L), HoldRequests(), RunStep(Step.PULL))),
        (Pulled(), L, (RunStep(Step.CREATE),)),
        (Created(), L, (RunStep(Step.START),)),
        (Started(), S, (Report(S), WatchStarting())),
        (ProbeAnswered(), R, (Report(R), Route())),
        (
            IdleSwept(),
            BackendState.SWEPT,
            (Report(BackendState.SWEPT, EndReason.SWEPT), Unroute(), RemoveContainer()),
        ),
    ]
    for event, state, instructions in steps:
        transition = machine.feed(event)
        assert (transition.state, transition.instructions) == (state, instructions)
    assert machine.history == [S, R, BackendState.SWEPT]


E, T, X = EndReason.ERROR, BackendState.TERMINATED, EndReason.EXITED


@pytest.mark.parametrize(
    ("state", "event", "ended", "why", "code"),
    [
        (R, ContainerExited(0), BackendState.EXITED, X, 0),
        (R, ContainerExited(1), BackendState.FAILED, E, 1),
        (S, ContainerExited(0), BackendState.ERROR_STARTING, X, 0),
        (L, ContainerExited(3), BackendState.ERROR_STARTING, E, 3),
        (L, DockerFailed("no such image"), BackendState.ERROR_LOADING, E, None),
        (S, DockerFailed("inspect failed"), BackendState.ERROR_STARTING, E, None),
        (R, DockerFailed("the container vanished"), BackendState.FAILED, E, None),
        (S, ReadyTimeout(), BackendState.TIMED_OUT_BEFORE_READY, EndReason.STARTUP_TIMEOUT, None),
        (L, TerminateRequested(), T, EndReason.TERMINATED, None),
        (S, TerminateRequested(), T, EndReason.TERMINATED, None),
        (R, TerminateRequested(), T, EndReason.TERMINATED, None),
        (L, LifetimeExpired(), T, EndReason.LIFETIME, None),
        (S, LifetimeExpired(), T, EndReason.LIFETIME, None),
        (R, LifetimeExpired(), T, EndReason.LIFETIME, None),
        (R, IdleSwept(), BackendState.SWEPT, EndReason.SWEPT, None),
        (L, Adopted(exit_code=0), BackendState.EXITED, X, 0),
        (L, Adopted(exit_code=9), BackendState.FAILED, E, 9),
    ],
)
def test_endings(
    state: BackendState, event: Event, ended: BackendState, why: EndReason, code: int | None
) -> None:
    transition = handle(state, event)
    assert transition.state is ended
    assert transition.instructions == (Report(ended, why, code), Unroute(), RemoveContainer())
    assert transition.reason


@pytest.mark.parametrize("state", [L, S, R])
def test_a_hard_termination_kills_at_once_and_is_reported(state: BackendState) -> None:
    transition = handle(state, TerminateRequested(hard=True))
    assert transition.state is T
    assert transition.instructions == (
        Report(T, EndReason.TERMINATED),
        Unroute(),
        RemoveContainer(at_once=True),
    )


@pytest.mark.parametrize("state", [L, S, R])
def test_a_fenced_backend_ends_at_once_without_a_report(state: BackendState) -> None:
    transition = handle(state, Fenced("declared Lost at 12:00"))
    assert transition.state is BackendState.LOST
    assert transition.instructions == (Unroute(), RemoveContainer(at_once=True))
    assert "declared Lost" in transition.reason


def test_an_adopted_running_container_is_probed_again_without_reporting_starting() -> None:
    transition = handle(L, Adopted())
    assert transition.state is S
    assert transition.instructions == (HoldRequests(), WatchStarting())


def test_the_exit_code_is_in_the_reason_of_an_early_exit() -> None:
    assert "status 3" in handle(S, ContainerExited(3)).reason


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S, IdleSwept()),  # only a Ready backend is swept
        (R, ReadyTimeout()),  # a timer that fired late
        (R, ProbeAnswered()),
        (R, Started()),
        (S, Pulled()),
        (L, ProbeAnswered()),
        (L, ReadyTimeout()),
    ],
)
def test_events_that_do_not_apply_change_nothing(state: BackendState, event: Event) -> None:
    transition = handle(state, event)
    assert transition.state is state
    assert transition.instructions == ()
    assert not transition.changed


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(list(BackendState), EVERY_EVENT))
)
def test_rules_that_hold_for_every_state_and_event(state: BackendState, event: Event) -> None:
    transition = handle(state, event)
    if state.terminal:
        # Terminal states are final and quiet.
        assert transition.state is state and transition.instructions == ()
        return
    # Never backwards.
    assert transition.state.rank >= state.rank
    removals = [i for i in transition.instructions if isinstance(i, RemoveContainer)]
    if transition.state.terminal:
        # Every way into a terminal state unroutes and removes the container, and
        # reports the end, unless the controllers hold it as ended already.
        assert Unroute() in transition.instructions
        assert isinstance(transition.instructions[-1], RemoveContainer)
        fenced = isinstance(event, Fenced)
        reports = [i for i in transition.instructions if isinstance(i, Report)]
        assert len(reports) == (0 if fenced else 1)
        # ... and says why it ended.
        assert all(r.reason is not None for r in reports)
        hard = isinstance(event, TerminateRequested) and event.hard
        assert transition.instructions[-1].at_once is (fenced or hard)
    else:
        assert removals == []
    reports = [i for i in transition.instructions if isinstance(i, Report)]
    assert all(r.state is transition.state for r in reports)
