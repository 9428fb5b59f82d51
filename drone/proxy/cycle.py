"""One request's facts, from its first byte to the end of its answer.

The browser's socket starts a new `Cycle` for each request; the exchange that
relays it reads the same one. So each fact about a request (has it ended, has
an answer begun, must the socket close after it) is held in one place, and
what belongs to the connection (its parser, its timers, its reading) is kept
apart from it.
"""

from __future__ import annotations

from drone.proxy.answers import Canned
from drone.proxy.response_writer import NO_REQUEST, Body, Peer


class Cycle:
    __slots__ = (
        "body",
        "close_after",
        "head_started",
        "peer",
        "pending",
        "pipelined",
        "request_ended",
    )

    def __init__(self, head_started: bool = False) -> None:
        self.peer: Peer = NO_REQUEST  # what the request being answered accepts
        self.body: Body | None = None  # how the answer's body goes; set once it has begun
        self.close_after = False  # the socket closes once the answer is out
        self.request_ended = False  # the whole request, body and all, has been read
        self.pending: Canned | None = None  # the proxy's answer, due once the request ends
        self.head_started = head_started  # bytes of the request's head have arrived
        self.pipelined = 0  # bytes of later requests read while this one is answered
