"""One backend's life as a pure state machine: `handle(state, event) -> Transition`.

The machine owns the order of life (docs/PROTOCOL.md): Loading → Starting →
Ready, then exactly one terminal state. It never moves to a lower
`BackendState.rank`, a terminal state is final, and every way into a terminal
state carries the instructions to unroute the backend and stop and remove its
container, so no path (errors included) leaves a container behind. Every end
is reported, except a fenced one: the controllers already stored its end.
Events that do not apply in a state are ignored with an empty transition; the
runner (`drone.agent.runner`) carries out the instructions and feeds the
results back as events. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shared.protocol import BackendState, EndReason

# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawned:
    """A spawn request was accepted: begin loading."""


@dataclass(frozen=True, slots=True)
class Adopted:
    """A container of this drone was found at start-up; `exit_code` None while it runs."""

    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class Pulled:
    """The image is present locally."""


@dataclass(frozen=True, slots=True)
class Created:
    pass


@dataclass(frozen=True, slots=True)
class Started:
    pass


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """The container answered HTTP on its port."""


@dataclass(frozen=True, slots=True)
class ContainerExited:
    exit_code: int


@dataclass(frozen=True, slots=True)
class ReadyTimeout:
    pass


@dataclass(frozen=True, slots=True)
class IdleSwept:
    pass


@dataclass(frozen=True, slots=True)
class TerminateRequested:
    hard: bool = False  # kill at once, without the SIGTERM grace


@dataclass(frozen=True, slots=True)
class LifetimeExpired:
    """The backend reached its `lifetime_limit_secs`."""


@dataclass(frozen=True, slots=True)
class DockerFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Fenced:
    """The controllers hold this life as ended (declared Lost, or placed elsewhere).

    Its end is already stored, so nothing is reported: the backend stops at
    once, and no copy of it keeps serving unseen.
    """

    reason: str


Event = (
    Spawned
    | Adopted
    | Pulled
    | Created
    | Started
    | ProbeAnswered
    | ContainerExited
    | ReadyTimeout
    | IdleSwept
    | TerminateRequested
    | LifetimeExpired
    | DockerFailed
    | Fenced
)

# --- instructions --------------------------------------------------------------


class Step(enum.Enum):
    """Loading work, one Docker operation at a time."""

    PULL = "pull"
    CREATE = "create"
    START = "start"


@dataclass(frozen=True, slots=True)
class Report:
    """Send this state to the controller (in order, in the background); a terminal
    one says why it ended, and with which exit status where there is one."""

    state: BackendState
    reason: EndReason | None = None
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class RunStep:
    step: Step


@dataclass(frozen=True, slots=True)
class HoldRequests:
    """Route the backend as pending, so the proxy can hold its first requests."""


@dataclass(frozen=True, slots=True)
class WatchStarting:
    """Follow output, probe readiness, arm the ready timer."""


@dataclass(frozen=True, slots=True)
class Route:
    """Ready: route traffic to the container, start the idle clock and DNS."""


@dataclass(frozen=True, slots=True)
class Unroute:
    """Stop routing, forget activity, stop the watchers."""


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    """Stop the container (if it runs) and remove it with its anonymous volumes.

    `at_once`: kill without the SIGTERM grace (its end was announced already).
    """

    at_once: bool = False


Instruction = Report | RunStep | HoldRequests | WatchStarting | Route | Unroute | RemoveContainer


@dataclass(frozen=True, slots=True)
class Transition:
    state: BackendState
    instructions: tuple[Instruction, ...] = ()
    reason: str = ""  # why, for the log line of a change; empty when nothing changed

    @property
    def changed(self) -> bool:
        return bool(self.reason)


@dataclass(slots=True)
class Machine:
    """A backend's current state with the pure `handle` applied in place."""

    state: BackendState = BackendState.LOADING
    history: list[BackendState] = field(default_factory=list)

    def feed(self, event: Event) -> Transition:
        transition = handle(self.state, event)
        if transition.state is not self.state:
            self.history.append(transition.state)
        self.state = transition.state
        return transition


def _end(
    state: BackendState,
    why: EndReason,
    reason: str,
    *,
    exit_code: int | None = None,
    report: bool = True,
    at_once: bool = False,
) -> Transition:
    head: tuple[Instruction, ...] = (Report(state, why, exit_code),) if report else ()
    remove = RemoveContainer(at_once=at_once or not report)
    return Transition(state, (*head, Unroute(), remove), reason)


def _exited(state: BackendState, code: int, reason: str) -> Transition:
    why = EndReason.EXITED if code == 0 else EndReason.ERROR
    return _end(state, why, reason, exit_code=code)


def _stay(state: BackendState) -> Transition:
    return Transition(state)


def handle(state: BackendState, event: Event) -> Transition:
    """The next state and what to do, for `event` arriving in `state`."""
    if state.terminal:
        return _stay(state)
    match event:
        case Fenced(reason=reason):
            return _end(BackendState.LOST, EndReason.LOST, reason, report=False)
        case TerminateRequested(hard=hard):
            said = "hard termination requested" if hard else "termination requested"
            return _end(BackendState.TERMINATED, EndReason.TERMINATED, said, at_once=hard)
        case LifetimeExpired():
            return _end(BackendState.TERMINATED, EndReason.LIFETIME, "lifetime_limit_secs reached")
        case DockerFailed(reason=reason):
            failed = {
                BackendState.LOADING: BackendState.ERROR_LOADING,
                BackendState.STARTING: BackendState.ERROR_STARTING,
            }.get(state, BackendState.FAILED)
            return _end(failed, EndReason.ERROR, f"Docker: {reason}")
        case ContainerExited(exit_code=code):
            if state is BackendState.READY:
                ended = BackendState.EXITED if code == 0 else BackendState.FAILED
                return _exited(ended, code, f"container exited with status {code}")
            said = f"exited with status {code} before ready"
            return _exited(BackendState.ERROR_STARTING, code, said)
    if state is BackendState.LOADING:
        return _loading(event)
    if state is BackendState.STARTING:
        return _starting(event)
    return _ready(event)


def _loading(event: Event) -> Transition:
    state = BackendState.LOADING
    match event:
        case Spawned():
            return Transition(
                state, (Report(state), HoldRequests(), RunStep(Step.PULL)), "spawn accepted"
            )
        case Adopted(exit_code=None):
            # The controller already knows it is at least Starting: say nothing until Ready.
            return Transition(
                BackendState.STARTING, (HoldRequests(), WatchStarting()), "adopted while running"
            )
        case Adopted(exit_code=int(code)):
            ended = BackendState.EXITED if code == 0 else BackendState.FAILED
            return _exited(ended, code, f"adopted after it exited with status {code}")
        case Pulled():
            return Transition(state, (RunStep(Step.CREATE),), "image present")
        case Created():
            return Transition(state, (RunStep(Step.START),), "container created")
        case Started():
            starting = BackendState.STARTING
            return Transition(starting, (Report(starting), WatchStarting()), "container started")
    return _stay(state)


def _starting(event: Event) -> Transition:
    match event:
        case ProbeAnswered():
            ready = BackendState.READY
            return Transition(ready, (Report(ready), Route()), "answered on its port")
        case ReadyTimeout():
            timed_out = BackendState.TIMED_OUT_BEFORE_READY
            return _end(timed_out, EndReason.STARTUP_TIMEOUT, "not ready in time")
    return _stay(BackendState.STARTING)


def _ready(event: Event) -> Transition:
    if isinstance(event, IdleSwept):
        return _end(BackendState.SWEPT, EndReason.SWEPT, "idle for max_idle_secs")
    return _stay(BackendState.READY)
