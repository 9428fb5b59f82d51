"""A corpus of hostile NATS messages, as an unauthenticated neighbour on the bus would send.

Families cover every subject a controller or drone serves: garbage bytes,
JSON of the wrong shape, fields out of bounds, image names made to break a
URL or a shell, valid-looking requests that can only fail, and forged
messages under made-up identities. Identities that exist (the real drone's
heartbeat, a valid drain of it) are left out: telling a forger from the
drone is the job of NATS permissions, not of parsing.

Generation is seeded, so a failing run can be repeated exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared import subjects


@dataclass(frozen=True, slots=True)
class Hostile:
    family: str
    subject: str
    payload: bytes
    request: bool  # a request that someone serves: it must be answered


BAD_IMAGES = [
    "/etc/passwd", "img;rm -rf /", "http://evil.example/x", "//x", "\x00", "a b", "UPPER",
    "x:", ":tag", "x@sha256:1", "../../x", "x/../y", "$(reboot)", "`id`", "x|y", "x&y",
    "x\ny", "x\r\n", "%2e%2e", "?", "#", "x" * 600, "é", "\u202e", "x:" + "t" * 200,
]  # fmt: skip
BAD_IDS = [
    "abc\n", "A", "a_b", "-x", "x-", "a.b", "*", ">", "a b", "a" * 64, "", "\x00", "é",
    "../x", "a\tb",
]  # fmt: skip
BIG_NUMBERS = [2**64, 10**100, -1, -(2**63), 2**31, 1e308, 0.5, "30", None, True, [], {}]
EXTRA_FIELDS: list[dict[str, Any]] = [
    {"privileged": True},
    {"HostConfig": {"Privileged": True, "NetworkMode": "host", "Binds": ["/:/host"]}},
    {"executable": {"image": "plane-testbackend:latest", "HostConfig": {"Privileged": True}}},
]
MOUNTS = [
    [{"Type": "bind", "Source": "/", "Target": "/host"}],
    [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/docker.sock"}],
    [{"Type": "nfs", "Target": "/x"}],
    [{"Type": "tmpfs", "Target": "relative"}],
    [{"Target": "/x"}],
    ["not an object"],
    [{"Type": "tmpfs", "Target": "/x"}] * 40,
]


class Corpus:
    def __init__(self, cluster: str, drone_id: str, seed: int = 1) -> None:
        self.cluster = cluster
        self.drone_id = drone_id
        self.rng = random.Random(seed)

    # --- helpers --------------------------------------------------------------

    def _garbage(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            return rng.randbytes(rng.randrange(0, 300))
        if choice == 1:
            return b"{" * rng.randrange(1, 5000)  # deep nesting, unterminated
        if choice == 2:
            return b'{"cluster": "' + b"x" * rng.randrange(1, 100_000)
        if choice == 3:
            return json.dumps(rng.choice([[1, 2], "str", 42, None, True, 1.5])).encode()
        if choice == 4:
            return b"\xff\xfe" + "{}".encode("utf-16")
        return b'{"a":' * 200 + b"1" + b"}" * 200

    def _json(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def _schedule(self, **changes: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "cluster": self.cluster,
            "max_idle_secs": 30,
            "metadata": {},
            "executable": {"image": "plane-testbackend:latest", "env": {}},
        }
        for key, value in changes.items():
            if key.startswith("x_"):
                request["executable"][key[2:]] = value
            else:
                request[key] = value
        return request

    def _random_id(self) -> str:
        return f"forged-{self.rng.randrange(10**9):09d}"

    # --- families -------------------------------------------------------------

    def schedule_garbage(self) -> Hostile:
        return Hostile("schedule-garbage", subjects.schedule(self.cluster), self._garbage(), True)

    def schedule_bad_fields(self) -> Hostile:
        rng = self.rng
        pick = rng.randrange(10)
        if pick == 0:
            body = self._schedule(x_image=rng.choice(BAD_IMAGES))
        elif pick == 1:
            body = self._schedule(backend_id=rng.choice(BAD_IDS))
        elif pick == 2:
            body = self._schedule(max_idle_secs=rng.choice(BIG_NUMBERS))
        elif pick == 3:
            body = self._schedule(cluster="c" * rng.choice([254, 300, 100_000]))
        elif pick == 4:
            body = self._schedule(metadata={str(i): "v" * 10 for i in range(rng.choice([65, 500]))})
        elif pick == 5:
            body = self._schedule(x_env={"A=B": "1"} if rng.random() < 0.5 else {"A": "x\x00y"})
        elif pick == 6:
            body = self._schedule(x_volume_mounts=rng.choice(MOUNTS))
        elif pick == 7:
            body = {**self._schedule(), **rng.choice(EXTRA_FIELDS)}
            body["executable"]["image"] = rng.choice(BAD_IMAGES)
        elif pick == 8:
            body = self._schedule(cluster=rng.choice(["other.test", "bad cluster", ""]))
        else:
            body = self._schedule(
                x_resource_limits={"cpu_period": rng.choice(BIG_NUMBERS), "memory_limit_bytes": -5}
            )
        return Hostile(
            "schedule-bad-fields", subjects.schedule(self.cluster), self._json(body), True
        )

    def schedule_doomed(self, image: str) -> Hostile:
        """Well formed, but it can only fail: an image that is not there and is never pulled."""
        body = self._schedule(x_image=image, x_pull_policy="Never", max_idle_secs=5)
        return Hostile("schedule-doomed", subjects.schedule(self.cluster), self._json(body), True)

    def forged_presence(self) -> Hostile:
        rng = self.rng
        drone = self._random_id()
        pick = rng.randrange(4)
        if pick == 0:
            return Hostile("forged-presence", subjects.drone_status(drone), self._garbage(), False)
        if pick == 1:
            body = {
                "drone_id": drone,
                "cluster": self.cluster,
                "ip": rng.choice(["x", "999.1.1.1"]),
            }
            return Hostile("forged-presence", subjects.DRONE_REGISTER, self._json(body), False)
        status = {
            "drone_id": drone,
            "cluster": rng.choice([self.cluster, "c" * 300, "bad cluster"]),
            "ready": rng.choice([True, False, "yes"]),
            "state": rng.choice(["Ready", "Sideways", 7]),
            "running_backends": rng.choice([0, -1, 2**70]),
            "backends": rng.choice([None, ["abc\n"], ["x"] * 20_000, [rng.choice(BAD_IDS)]]),
        }
        return Hostile("forged-presence", subjects.drone_status(drone), self._json(status), False)

    def forged_update(self) -> Hostile:
        rng = self.rng
        backend = rng.choice([f"b{rng.randrange(10**6)}", "x"])
        subject = subjects.update_backend_state(self.cluster, backend)
        if rng.random() < 0.5:
            return Hostile("forged-update", subject, self._garbage(), True)
        body = {
            "cluster": self.cluster,
            "state": rng.choice(["Ready", "Lost", "Sideways"]),
            "backend": rng.choice([backend, "other", "abc\n"]),
            "time": rng.choice(["2026-01-01T00:00:00Z", "yesterday", 5]),
            "drone": rng.choice([self._random_id(), "a.b", ""]),
        }
        return Hostile("forged-update", subject, self._json(body), True)

    def direct_spawn(self) -> Hostile:
        rng = self.rng
        if rng.random() < 0.5:
            payload = self._garbage()
        else:
            body = {
                "cluster": self.cluster,
                "drone_id": self.drone_id,
                "backend_id": rng.choice(BAD_IDS),
                "executable": {"image": rng.choice(BAD_IMAGES)},
                "deadline": rng.choice(["soon", 5, "2020-01-01T00:00:00Z"]),
            }
            payload = self._json(body)
        return Hostile("direct-spawn", subjects.drone_spawn(self.drone_id), payload, True)

    def terminate_or_drain(self) -> Hostile:
        rng = self.rng
        if rng.random() < 0.5:
            subject = subjects.terminate(self.cluster, f"b{rng.randrange(10**6)}")
            return Hostile("terminate-drain", subject, self._garbage(), False)
        # Malformed drains of the real drone: refused with a reason, drain unchanged.
        body = rng.choice(
            [{"drone": "x"}, {"drain": "yes"}, {"drone": self.drone_id, "cluster": "c" * 300}]
        )
        subject = subjects.drain(self.cluster, self.drone_id)
        return Hostile("terminate-drain", subject, self._json(body), True)

    def dns(self) -> Hostile:
        rng = self.rng
        if rng.random() < 0.5:
            body = {"cluster": self.cluster, "value": rng.choice(["v" * 1000, 5, None])}
            return Hostile("dns", subjects.ACME_SET_DNS_RECORD, self._json(body), True)
        body = {
            "cluster": rng.choice([self.cluster, "c" * 300]),
            "kind": rng.choice(["A", "TXT", "MX"]),
            "name": rng.choice(["x" * 500, "a..b", "", "_acme-challenge"]),
            "value": rng.choice(["999.0.0.1", "v" * 1000, "203.0.113.9"]),
        }
        return Hostile("dns", subjects.dns_record(self.cluster, "A"), self._json(body), False)

    def fence(self) -> Hostile:
        rng = self.rng
        body = rng.choice(
            [
                {"cluster": self.cluster, "drone": self.drone_id, "backends": "all"},
                {"cluster": self.cluster, "drone": self.drone_id, "backends": [{"backend": "*"}]},
                {"backends": [{"backend": "x", "since": "never"}] * 20_000},
            ]
        )
        payload = self._json(body) if rng.random() < 0.7 else self._garbage()
        return Hostile("fence", subjects.drone_fence(self.drone_id), payload, False)

    def listing(self) -> Hostile:
        subject = self.rng.choice(
            [subjects.list_drones(self.cluster), subjects.list_backends(self.cluster)]
        )
        return Hostile("listing", subject, self._garbage(), True)

    # --- the whole -------------------------------------------------------------

    def messages(self, doomed_images: list[str]) -> Iterator[Hostile]:
        """Every family in proportion, shuffled: about 10,800 messages."""
        plan: list[tuple[int, Any]] = [
            (3000, self.schedule_garbage),
            (3000, self.schedule_bad_fields),
            (1000, self.forged_presence),
            (1000, self.forged_update),
            (1000, self.direct_spawn),
            (500, self.terminate_or_drain),
            (500, self.dns),
            (300, self.fence),
            (300, self.listing),
        ]
        makers = [make for count, make in plan for _ in range(count)]
        makers += [lambda image=image: self.schedule_doomed(image) for image in doomed_images]
        self.rng.shuffle(makers)
        for make in makers:
            yield make()
