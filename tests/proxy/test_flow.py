"""ReadGate: the transport is paused on the first reason and resumed on the last."""

from __future__ import annotations

import asyncio
from typing import cast

from drone.proxy.flow import ReadGate

A, B = 1, 2


class Calls:
    """Stands in for a transport: records the reading calls it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def gate(held: int = 0) -> tuple[ReadGate, Calls]:
    calls = Calls()
    return ReadGate(cast(asyncio.Transport, calls), held), calls


def test_pauses_on_the_first_reason_and_resumes_on_the_last() -> None:
    reading, transport = gate()
    reading.hold(A)
    reading.hold(B)
    reading.hold(A)
    assert transport.calls == ["pause"]
    assert not reading.release(A)
    assert transport.calls == ["pause"]
    assert reading.release(B)
    assert transport.calls == ["pause", "resume"]
    assert not reading.release(B), "a reason not held changes nothing"
    assert transport.calls == ["pause", "resume"]


def test_release_all_resumes_once() -> None:
    reading, transport = gate(A | B)
    assert reading.release_all()
    assert not reading.release_all()
    assert transport.calls == ["resume"]


def test_a_closed_transport_is_never_called() -> None:
    reading, transport = gate()
    reading.closed = True
    reading.hold(A)
    assert reading.held == A
    assert not reading.release(A)
    assert transport.calls == []


def test_reasons_held_before_the_transport_arrives_pause_it_then() -> None:
    reading = ReadGate()
    reading.hold(A)
    calls = Calls()
    reading.attach(cast(asyncio.Transport, calls))
    assert calls.calls == ["pause"]
    assert reading.release(A)
    assert calls.calls == ["pause", "resume"]
