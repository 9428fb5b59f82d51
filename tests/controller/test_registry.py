"""The drone registry as a pure state machine: heartbeats and a clock in, choices out."""

from __future__ import annotations

import collections
import random

from controller.registry import (
    DroneForgotten,
    DroneJoined,
    DroneLost,
    DroneRegistry,
    DroneStateChanged,
    SpawnOutcome,
)
from shared.protocol import DroneConnectRequest, DroneState, DroneStatusMessage, utc_now

C = "plane.test"
WALL = utc_now()


def registry(**kw: object) -> DroneRegistry:
    settings: dict[str, object] = {
        "fresh_secs": 12.0,
        "lost_after_secs": 30.0,
        "forget_after_secs": 3600.0,
        "rng": random.Random(5),
    }
    settings.update(kw)
    return DroneRegistry(**settings)  # type: ignore[arg-type]


def status(
    drone: str,
    *,
    ready: bool = True,
    state: DroneState = DroneState.READY,
    running: int | None = 0,
    cluster: str = C,
) -> DroneStatusMessage:
    return DroneStatusMessage(
        drone_id=drone, cluster=cluster, ready=ready, state=state, running_backends=running
    )


def test_a_new_drone_joins_and_is_chosen() -> None:
    reg = registry()
    assert reg.status(status("a"), 0.0, WALL) == [DroneJoined("a", C)]
    assert reg.choose(C, 1.0) == "a"
    assert reg.choose("other.test", 1.0) is None


def test_not_ready_draining_and_stopped_drones_are_not_candidates() -> None:
    reg = registry()
    reg.status(status("not-ready", ready=False), 0.0, WALL)
    reg.status(status("draining", state=DroneState.DRAINING), 0.0, WALL)
    reg.status(status("stopped", state=DroneState.STOPPED), 0.0, WALL)
    assert reg.choose(C, 1.0) is None
    reg.status(status("ok"), 0.0, WALL)
    assert reg.choose(C, 1.0) == "ok"


def test_a_drone_starts_draining_and_stops_being_chosen_at_once() -> None:
    reg = registry()
    reg.status(status("a"), 0.0, WALL)
    changes = reg.status(status("a", ready=False, state=DroneState.DRAINING), 1.0, WALL)
    assert changes == [DroneStateChanged("a", C, DroneState.READY, DroneState.DRAINING)]
    assert reg.choose(C, 1.0) is None


def test_a_drone_not_heard_within_the_fresh_window_is_passed_over() -> None:
    reg = registry(fresh_secs=12.0)
    reg.status(status("old"), 0.0, WALL)
    reg.status(status("new"), 10.0, WALL)
    assert reg.choose(C, 12.5, exclude={"new"}) is None  # old: last heard 12.5 s ago
    listed = {d.drone_id: (d.state, d.ready) for d in reg.drones(C, 12.5)}
    assert listed == {"old": (DroneState.READY, False), "new": (DroneState.READY, True)}
    reg.status(status("old"), 13.0, WALL)  # it speaks again: a candidate once more
    assert reg.choose(C, 13.5, exclude={"new"}) == "old"
    assert [d.ready for d in reg.drones(C, 13.5)] == [True, True]


def test_a_drone_heard_before_a_nats_outage_is_a_candidate_right_after_it() -> None:
    reg = registry(fresh_secs=12.0)
    reg.status(status("a"), 0.0, WALL)
    reg.pause(5.0)
    reg.resume(60.0)  # its first heartbeat since may still be on the way
    assert [d.ready for d in reg.drones(C, 60.5)] == [True]
    assert reg.choose(C, 60.5) == "a"
    assert reg.choose(C, 72.5) is None  # a fresh window from the reconnect, no longer
    assert [d.ready for d in reg.drones(C, 72.5)] == [False]


def test_a_burst_is_spread_because_assignments_count_at_once() -> None:
    reg = registry()
    for drone in "abc":
        reg.status(status(drone, running=0), 0.0, WALL)
    picks = collections.Counter(reg.choose(C, 1.0) for _ in range(50))
    assert sorted(picks.values()) == [16, 17, 17]


def test_fewest_running_plus_assigned_wins() -> None:
    reg = registry()
    reg.status(status("busy", running=10), 0.0, WALL)
    reg.status(status("idle", running=7), 0.0, WALL)
    picks = [reg.choose(C, 1.0) for _ in range(4)]
    # idle gets 3 (7→10), then they tie at 10 and either may take the fourth.
    assert picks[:3] == ["idle"] * 3


def test_an_accepted_assignment_counts_until_the_next_heartbeat() -> None:
    reg = registry()
    reg.status(status("a", running=0), 0.0, WALL)
    reg.status(status("b", running=1), 0.0, WALL)
    assert reg.choose(C, 1.0) == "a"
    reg.spawn_result("a", SpawnOutcome.ACCEPTED, 1.1)
    record = reg.get("a")
    assert record is not None and record.load == 1
    # The drone's next heartbeat reports the backend itself: counted once, not twice.
    reg.status(status("a", running=1), 2.0, WALL)
    assert record.load == 1


def test_an_assignment_never_reported_expires() -> None:
    reg = registry(assignment_ttl_secs=5.0)
    reg.status(status("a", running=None), 0.0, WALL)
    reg.choose(C, 1.0)
    reg.spawn_result("a", SpawnOutcome.ACCEPTED, 1.0)
    reg.sweep(3.0)
    record = reg.get("a")
    assert record is not None and record.load == 1
    reg.sweep(6.5)
    assert record.load == 0


def test_a_refusal_frees_the_slot_and_keeps_the_drone_a_candidate() -> None:
    reg = registry()
    reg.status(status("a"), 0.0, WALL)
    assert reg.choose(C, 1.0) == "a"
    reg.spawn_result("a", SpawnOutcome.REFUSED, 1.0)
    record = reg.get("a")
    assert record is not None and record.load == 0
    assert reg.choose(C, 1.1) == "a"


def test_a_drone_that_did_not_answer_is_skipped_until_its_next_heartbeat() -> None:
    reg = registry()
    reg.status(status("a"), 0.0, WALL)
    assert reg.choose(C, 1.0) == "a"
    reg.spawn_result("a", SpawnOutcome.UNREACHABLE, 2.0)
    assert reg.choose(C, 2.1) is None
    reg.status(status("a"), 4.0, WALL)
    assert reg.choose(C, 4.1) == "a"


def test_a_silent_drone_is_lost_then_forgotten() -> None:
    reg = registry(lost_after_secs=30.0, forget_after_secs=100.0)
    reg.register(DroneConnectRequest(drone_id="a", cluster=C, ip="192.0.2.1"), 0.0, WALL)
    reg.status(status("a"), 0.0, WALL)
    assert reg.sweep(29.0) == []
    assert reg.sweep(30.0) == [DroneLost("a", C)]
    assert reg.lost() == ["a"]
    assert reg.choose(C, 30.0) is None
    (info,) = reg.drones(C, 30.0)
    assert (info.state, info.ready, info.ip) == (DroneState.LOST, False, "192.0.2.1")
    assert reg.sweep(129.0) == []
    assert reg.sweep(130.0) == [DroneForgotten("a", C)]
    assert reg.drones(C, 130.0) == []


def test_a_lost_drone_that_speaks_again_comes_back() -> None:
    reg = registry(lost_after_secs=30.0)
    reg.status(status("a"), 0.0, WALL)
    reg.sweep(31.0)
    changes = reg.status(status("a"), 40.0, WALL)
    assert changes == [DroneStateChanged("a", C, DroneState.LOST, DroneState.READY)]
    assert reg.lost() == [] and reg.choose(C, 40.0) == "a"


def test_silence_while_nats_is_away_is_not_held_against_drones() -> None:
    reg = registry(lost_after_secs=30.0)
    reg.status(status("a"), 0.0, WALL)
    reg.pause(10.0)
    assert reg.sweep(100.0) == []  # no verdicts while disconnected
    reg.resume(100.0)
    assert reg.sweep(129.0) == []  # a fresh grace period from the reconnect
    assert reg.sweep(130.0) == [DroneLost("a", C)]


def test_a_drone_known_only_from_the_index_is_lost_if_it_never_speaks() -> None:
    reg = registry(lost_after_secs=30.0)
    reg.expect("ghost", C, 0.0, WALL)
    assert reg.drones(C, 1.0) == [] and len(reg) == 0  # not listed: never heard
    assert reg.choose(C, 1.0) is None
    assert reg.sweep(30.0) == [DroneLost("ghost", C)]


def test_a_drone_that_moves_cluster_is_chosen_only_in_the_new_one() -> None:
    reg = registry()
    reg.status(status("a", cluster="one.test"), 0.0, WALL)
    reg.status(status("a", cluster="two.test"), 1.0, WALL)
    assert reg.choose("one.test", 1.5) is None
    assert reg.choose("two.test", 1.5) == "a"


def test_a_controller_for_some_clusters_keeps_only_their_drones() -> None:
    reg = registry(clusters={"mine.test"})
    assert reg.status(status("theirs", cluster="theirs.test"), 0.0, WALL) == []
    assert reg.status(status("mine", cluster="mine.test"), 0.0, WALL) == [
        DroneJoined("mine", "mine.test")
    ]
    assert reg.clusters() == {"mine.test"}


def test_the_ip_comes_from_registration_or_the_status() -> None:
    reg = registry()
    reg.register(DroneConnectRequest(drone_id="a", cluster=C, ip="192.0.2.1"), 0.0, WALL)
    assert reg.ip_of("a") == "192.0.2.1"
    reg.status(DroneStatusMessage(drone_id="a", cluster=C, ready=True, ip="192.0.2.2"), 1.0, WALL)
    assert reg.ip_of("a") == "192.0.2.2"
    assert reg.count_by_state()[DroneState.READY] == 1


def test_the_registry_keeps_at_most_max_drones() -> None:
    registry = DroneRegistry(fresh_secs=3, lost_after_secs=30, forget_after_secs=3600, max_drones=2)
    for drone in ("a", "b", "c"):
        registry.status(
            DroneStatusMessage(drone_id=drone, cluster="plane.test", ready=True), 0.0, utc_now()
        )
    assert sorted(r.drone_id for r in registry.drones("plane.test", 0.0)) == ["a", "b"]
    assert registry.refused_drones == 1
    # Those it knows are still heard.
    registry.status(
        DroneStatusMessage(drone_id="a", cluster="plane.test", ready=False), 1.0, utc_now()
    )
    assert registry.refused_drones == 1
