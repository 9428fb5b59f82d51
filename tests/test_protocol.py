"""Golden tests: every message round-trips to the same JSON; bad input gets a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared import ids, protocol, subjects, wire

GOLDEN = Path(__file__).parent / "golden"

MESSAGE_TYPES: dict[str, Any] = {
    "ScheduleRequest": protocol.ScheduleRequest,
    "ScheduleResponse": protocol.ScheduleResponse,
    "FetchRequest": protocol.FetchRequest,
    "FetchResponse": protocol.FetchResponse,
    "SpawnRequest": protocol.SpawnRequest,
    "TerminationRequest": protocol.TerminationRequest,
    "DrainDrone": protocol.DrainDrone,
    "DroneConnectRequest": protocol.DroneConnectRequest,
    "DroneStatusMessage": protocol.DroneStatusMessage,
    "UpdateBackendStateMessage": protocol.UpdateBackendStateMessage,
    "BackendStateMessage": protocol.BackendStateMessage,
    "DroneLogMessage": protocol.DroneLogMessage,
    "BackendStatsMessage": protocol.BackendStatsMessage,
    "SetDnsRecord": protocol.SetDnsRecord,
    "SetAcmeDnsRecord": protocol.SetAcmeDnsRecord,
    "DroneInfo": protocol.DroneInfo,
    "BackendInfo": protocol.BackendInfo,
    "FenceBackends": protocol.FenceBackends,
}

SAMPLES = sorted(p for p in GOLDEN.glob("*.json") if not p.name.startswith("seed_"))


def test_every_message_type_has_a_sample() -> None:
    sampled = {p.name.split(".")[0] for p in SAMPLES}
    assert sampled == set(MESSAGE_TYPES)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_round_trips_to_the_same_json(path: Path) -> None:
    raw = path.read_bytes()
    kind = MESSAGE_TYPES[path.name.split(".")[0]]
    decoded = wire.decode(kind, raw)
    assert json.loads(wire.encode(decoded)) == json.loads(raw)


def test_seed_request_decodes_with_defaults_and_keeps_its_fields() -> None:
    raw = (GOLDEN / "seed_schedule_request.json").read_bytes()
    request = wire.decode(protocol.ScheduleRequest, raw)
    assert request.cluster == "plane.dev"
    assert request.max_idle_secs == 30
    assert request.executable.image == "ghcr.io/drifting-in-space/demo-image-drop-four"
    assert request.backend_id is None
    assert request.require_bearer_token is False
    assert request.executable.pull_policy is protocol.PullPolicy.IF_NOT_PRESENT
    reencoded = json.loads(wire.encode(request))
    original = json.loads(raw)
    assert {k: reencoded[k] for k in original if k != "executable"} == {
        k: v for k, v in original.items() if k != "executable"
    }
    assert {k: reencoded["executable"][k] for k in original["executable"]} == original["executable"]
    # Re-encoding is stable: decode(encode(x)) == x.
    assert wire.decode(protocol.ScheduleRequest, wire.encode(request)) == request


def test_seed_response_is_scheduled() -> None:
    raw = (GOLDEN / "seed_schedule_response.json").read_bytes()
    response = wire.decode(protocol.ScheduleResponse, raw)
    assert isinstance(response, protocol.ScheduleReply)
    assert response.Scheduled is not None
    assert response.Scheduled.backend_id == "546a8f81-125a-4930-9b5a-25172100ce78"
    assert json.loads(wire.encode(response)) == json.loads(raw)


def test_unit_variant_is_a_bare_string() -> None:
    assert wire.encode(protocol.NO_DRONE_AVAILABLE) == b'"NoDroneAvailable"'
    assert wire.decode(protocol.ScheduleResponse, b'"NoDroneAvailable"') == "NoDroneAvailable"


def test_unknown_fields_are_ignored() -> None:
    raw = json.loads((GOLDEN / "seed_schedule_request.json").read_text())
    raw["future_field"] = {"anything": [1, 2]}
    raw["executable"]["gpu"] = True
    assert wire.decode(protocol.ScheduleRequest, json.dumps(raw)).cluster == "plane.dev"


def test_times_encode_as_rfc3339_utc() -> None:
    message = protocol.BackendStateMessage(
        cluster="plane.dev",
        state=protocol.BackendState.READY,
        backend="b1",
        time=protocol.utc_now(),
    )
    text = json.loads(wire.encode(message))["time"]
    assert text.endswith("Z") and "T" in text


def test_nanosecond_times_from_other_implementations_decode() -> None:
    raw = b'{"cluster":"c","state":"Ready","backend":"b","time":"2022-01-01T00:00:00.123456789Z"}'
    assert wire.decode(protocol.BackendStateMessage, raw).time.microsecond == 123457


def seed_with(**changes: Any) -> bytes:
    raw = json.loads((GOLDEN / "seed_schedule_request.json").read_text())
    for dotted, value in changes.items():
        target = raw
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return json.dumps(raw).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (seed_with(executable__image=KeyError), "executable.image: missing required field"),
        (seed_with(executable__image=42), "executable.image: expected a string, got an integer"),
        (seed_with(executable__image=""), "executable.image: expected a string of length >= 1"),
        (seed_with(max_idle_secs="30"), "max_idle_secs: expected an integer, got a string"),
        (seed_with(max_idle_secs=-1), "max_idle_secs: expected an integer >= 0"),
        (seed_with(backend_id="Not_A_Label"), "backend_id: must be 1-63 characters"),
        (seed_with(backend_id="-x"), "backend_id: must be 1-63 characters"),
        (seed_with(backend_id="a" * 64), "backend_id: must be 1-63 characters"),
        (seed_with(executable__env={"A": 1}), "executable.env.*: expected a string"),
        (seed_with(executable__pull_policy="Sometimes"), "executable.pull_policy: invalid enum"),
        (seed_with(executable__port=70000), "executable.port: expected an integer <= 65535"),
        (seed_with(executable__credentials={"Token": "x"}), "executable.credentials"),
        (seed_with(cluster=KeyError), "cluster: missing required field"),
        (b"[1, 2, 3]", "expected an object, got an array"),
        (b"{not json", "invalid JSON"),
        (b"", "invalid JSON"),
    ],
)
def test_malformed_requests_get_a_field_naming_error(payload: bytes, expected: str) -> None:
    with pytest.raises(wire.InvalidMessage) as caught:
        wire.decode(protocol.ScheduleRequest, payload)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_megabyte_of_garbage_is_refused_quickly() -> None:
    garbage = bytes(range(256)) * 4096
    with pytest.raises(wire.InvalidMessage) as caught:
        wire.decode(protocol.ScheduleRequest, garbage)
    assert "invalid JSON" in str(caught.value) or "bytes" in str(caught.value)
    with pytest.raises(wire.InvalidMessage, match="more than"):
        wire.decode(protocol.ScheduleRequest, b" " * (wire.MAX_MESSAGE_BYTES + 1))


def test_drone_ip_must_be_an_address() -> None:
    with pytest.raises(wire.InvalidMessage, match="not an IP address"):
        wire.decode(protocol.DroneConnectRequest, b'{"drone_id":"d","cluster":"c","ip":"nope"}')


def test_backend_states_know_which_are_terminal() -> None:
    live = {s for s in protocol.BackendState if not s.terminal}
    assert live == {
        protocol.BackendState.LOADING,
        protocol.BackendState.STARTING,
        protocol.BackendState.READY,
    }
    assert protocol.BackendState.LOADING.rank < protocol.BackendState.READY.rank
    assert protocol.BackendState.READY.rank < protocol.BackendState.SWEPT.rank


@pytest.mark.parametrize("good", ["a", "0", "my-backend-1", "a" * 63, ids.new_id()])
def test_backend_id_rule_accepts(good: str) -> None:
    assert ids.backend_id(good) == good


@pytest.mark.parametrize("bad", ["", "A", "a_b", "-a", "a-", "a.b", "a" * 64, "a b", "é"])
def test_backend_id_rule_rejects(bad: str) -> None:
    with pytest.raises(ids.InvalidId):
        ids.backend_id(bad)


def test_generated_ids_are_lowercase_uuid4() -> None:
    value = ids.new_id()
    assert value == value.lower() and len(value) == 36 and value[14] == "4"


def test_subjects_replace_dots_in_cluster_names() -> None:
    assert subjects.schedule("plane.dev") == "cluster.plane_dev.schedule"
    assert subjects.schedule("localhost:9090") == "cluster.localhost:9090.schedule"
    assert subjects.terminate("plane.dev", "b1") == "cluster.plane_dev.backend.b1.terminate"
    assert subjects.drain("plane.dev", "d1") == "cluster.plane_dev.drone.d1.drain"
    assert subjects.drone_spawn("d1") == "drone.d1.spawn"
    assert subjects.drone_status("d1") == "drone.d1.status"
    assert subjects.update_backend_state("a.b.c", "b1") == "cluster.a_b_c.backend.b1.status"
    assert subjects.backend_status("b1") == "backend.b1.status"
    assert subjects.backend_log("b1") == "backend.b1.log"
    assert subjects.backend_stats("b1") == "backend.b1.stats"
    assert subjects.dns_record("plane.dev", "A") == "cluster.plane_dev.dns.A"
    with pytest.raises(ids.InvalidId):
        subjects.schedule("bad cluster.*")
