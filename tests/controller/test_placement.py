"""The least-loaded heap: order, random tie-break, exclusions, lazy deletion."""

from __future__ import annotations

import collections
import random

from controller.placement import LoadQueue


def always(drone: str) -> bool:
    return True


def test_the_least_loaded_drone_is_best() -> None:
    queue = LoadQueue(random.Random(1))
    for drone, load in [("a", 5), ("b", 2), ("c", 9)]:
        queue.set(drone, load)
    assert queue.best(always) == "b"
    queue.set("b", 7)  # b took work: a is now the emptiest
    assert queue.best(always) == "a"


def test_ties_are_broken_at_random_and_fairly() -> None:
    firsts: collections.Counter[str | None] = collections.Counter()
    for seed in range(600):
        queue = LoadQueue(random.Random(seed))
        for drone in "abc":
            queue.set(drone, 3)
        firsts[queue.best(always)] += 1
    assert set(firsts) == {"a", "b", "c"}
    assert min(firsts.values()) > 150  # each about 200 of 600


def test_the_same_seed_gives_the_same_choices() -> None:
    def run(seed: int) -> list[str | None]:
        queue = LoadQueue(random.Random(seed))
        picks: list[str | None] = []
        for drone in "abcd":
            queue.set(drone, 0)
        for load in range(1, 9):
            best = queue.best(always)
            picks.append(best)
            assert best is not None
            queue.set(best, load)
        return picks

    assert run(7) == run(7)


def test_excluded_drones_are_skipped_but_kept() -> None:
    queue = LoadQueue(random.Random(1))
    queue.set("a", 0)
    queue.set("b", 1)
    assert queue.best(always, exclude={"a"}) == "b"
    assert queue.best(always, exclude={"a", "b"}) is None
    assert queue.best(always) == "a"


def test_an_unusable_drone_is_dropped_until_set_again() -> None:
    queue = LoadQueue(random.Random(1))
    queue.set("a", 0)
    queue.set("b", 1)
    assert queue.best(lambda d: d != "a") == "b"
    assert "a" not in queue
    assert queue.best(always) == "b"
    queue.set("a", 0)
    assert queue.best(always) == "a"


def test_discarded_drones_are_never_chosen() -> None:
    queue = LoadQueue(random.Random(1))
    queue.set("a", 0)
    queue.discard("a")
    assert queue.best(always) is None and len(queue) == 0


def test_many_updates_keep_the_heap_small_and_correct() -> None:
    rng = random.Random(3)
    queue = LoadQueue(random.Random(4))
    loads = {f"d{i}": 0 for i in range(50)}
    for drone in loads:
        queue.set(drone, 0)
    for _ in range(5000):
        drone = rng.choice(list(loads))
        loads[drone] = rng.randrange(100)
        queue.set(drone, loads[drone])
        best = queue.best(always)
        assert best is not None and loads[best] == min(loads.values())
    assert queue.heap_size <= 2 * len(loads) + 65
