"""Properties of every decoder, validator and pattern, over inputs hypothesis makes up.

Each decoder either returns a message or raises `InvalidMessage` with a reason
(never another exception), and what it accepts stays within the protocol's
bounds. Each pattern matches whole values only. An image reference we accept
is one the real engine parses.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from typing import Any

import aiodocker
import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared import ids, protocol, reference, subjects, wire
from tests.support import docker as docker_support

MESSAGES: list[Any] = [
    protocol.ScheduleRequest,
    protocol.SpawnRequest,
    protocol.TerminationRequest,
    protocol.DrainDrone,
    protocol.DroneConnectRequest,
    protocol.DroneStatusMessage,
    protocol.UpdateBackendStateMessage,
    protocol.BackendStateMessage,
    protocol.DroneLogMessage,
    protocol.BackendStatsMessage,
    protocol.SetDnsRecord,
    protocol.SetAcmeDnsRecord,
    protocol.FenceBackends,
    protocol.ScheduleResponse,
    protocol.SpawnReply,
]

# JSON documents of any shape, with the strings and numbers attackers like.
nasty_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "\n", "abc\n", "\x00", "*", ">", "a.b", "../", "é", "A" * 300]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["cluster", "backend_id", "drone_id", "drone", "executable", "image", "env", "metadata",
     "max_idle_secs", "state", "backend", "time", "ip", "backends", "deadline", "kind",
     "volume_mounts", "resource_limits", "pull_policy", "port", "ready", "name", "value"]
)  # fmt: skip
objects = st.dictionaries(field_names, json_values, max_size=8)


def decodes_or_explains(kind: Any, data: bytes) -> Any:
    try:
        return wire.decode(kind, data)
    except wire.InvalidMessage as exc:
        assert str(exc), "a refusal says why"
        return None


@pytest.mark.parametrize("kind", MESSAGES, ids=lambda k: getattr(k, "__name__", str(k)))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=200), objects.map(lambda o: json.dumps(o).encode())))
def test_every_decoder_answers_a_message_or_a_reason(kind: Any, data: bytes) -> None:
    decoded = decodes_or_explains(kind, data)
    if decoded is not None and isinstance(decoded, msgspec.Struct):
        # What is accepted encodes again and decodes to the same message.
        assert wire.decode(kind, wire.encode(decoded)) == decoded


def seed_request() -> dict[str, Any]:
    return {"cluster": "plane.dev", "executable": {"image": "plane-demo:1"}}


@settings(max_examples=300)
@given(field=st.sampled_from(["cluster", "backend_id", "max_idle_secs", "metadata"]),
       value=json_values)  # fmt: skip
def test_a_schedule_request_accepted_stays_within_the_bounds(field: str, value: Any) -> None:
    raw = seed_request()
    raw[field] = value
    request = decodes_or_explains(protocol.ScheduleRequest, json.dumps(raw).encode())
    if request is None:
        return
    assert ids.is_valid_cluster(request.cluster) or len(request.cluster) <= ids.MAX_CLUSTER_LENGTH
    assert request.backend_id is None or ids.is_valid_backend_id(request.backend_id)
    assert 0 <= request.max_idle_secs <= protocol.MAX_SECONDS
    assert len(request.metadata) <= protocol.MAX_METADATA_ENTRIES


BACKEND_ID_CHARS = set(string.ascii_lowercase + string.digits + "-")


@given(st.text(alphabet=string.ascii_lowercase + string.digits + "-\n_.A", max_size=70))
@example("abc\n")
@example("a" * 63)
@example("a" * 64)
def test_the_backend_id_rule_is_the_dns_label_rule(value: str) -> None:
    by_hand = (
        1 <= len(value) <= 63
        and set(value) <= BACKEND_ID_CHARS
        and value[0] != "-"
        and value[-1] != "-"
    )
    assert ids.is_valid_backend_id(value) is by_hand
    # The wire type says the same, whatever msgspec's pattern search does.
    accepted = decodes_or_explains(ids.WireBackendId, json.dumps(value).encode()) is not None
    assert accepted is by_hand


@given(st.text(max_size=300))
@example("plane.dev\n")
@example("plane.dev:9090")
@example("a" * 63 + "." + "b" * 63)
def test_a_valid_cluster_is_safe_as_one_subject_token(value: str) -> None:
    if not ids.is_valid_cluster(value):
        return
    token = ids.cluster_token(value)
    assert not set(token) & set(". *>\t\r\n\x00")
    assert subjects.schedule(value).count(".") == 2
    assert len(value) <= ids.MAX_CLUSTER_LENGTH


@given(st.text(max_size=140))
@example("drone-1\n")
def test_drone_ids_are_plain_tokens(value: str) -> None:
    assert ids.is_valid_drone_id(value) is bool(re.fullmatch(r"[A-Za-z0-9_-]{1,128}", value))


@given(st.text(max_size=2000))
def test_pattern_failures_and_other_reasons_are_described(text: str) -> None:
    described = wire.describe_validation_error(text)
    assert isinstance(described, str)


# --- image references ---------------------------------------------------------

component = st.from_regex(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", fullmatch=True).filter(
    lambda c: len(c) <= 40
)
registry = st.from_regex(r"[a-z0-9]+(?:\.[a-z0-9]+)+(?::[0-9]{1,5})?", fullmatch=True).filter(
    lambda r: len(r) <= 60
)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
references = st.builds(
    lambda host, path, tag: (
        (f"{host}/" if host else "") + "/".join(path) + (f":{tag}" if tag else "")
    ),
    st.none() | registry,
    st.lists(component, min_size=1, max_size=3),
    st.none() | tag,
)  # fmt: skip


@given(references)
def test_references_built_from_the_grammar_are_accepted(value: str) -> None:
    if len(value) <= reference.MAX_NAME_LENGTH:
        assert reference.problem(value) is None, value


@given(st.text(max_size=100))
@example("/etc/passwd")
@example("img;rm -rf /")
@example("http://evil.example/x")
@example("//x")
@example("\x00")
@example("Ubuntu")
def test_accepted_references_hold_nothing_a_url_or_a_shell_would_read(value: str) -> None:
    if reference.problem(value) is not None:
        return
    assert not set(value) & set(" \t\r\n\x00;&|$`'\"\\?#%")
    assert not value.startswith("/") and "//" not in value and "://" not in value


def test_a_hostile_megabyte_of_image_name_is_refused_at_once() -> None:
    for hostile in ("a" * 1_000_000, "a-" * 500_000, "a." * 500_000, "[" + ":" * 999_999):
        assert reference.problem(hostile) is not None


def test_accepted_references_are_ones_the_real_engine_parses() -> None:
    """What we pass, Docker parses (its answer is "no such image", never "invalid")."""
    samples = [
        "ubuntu", "ubuntu:22.04", "library/ubuntu", "ghcr.io/o/r:v1.2.3",
        "localhost:5000/a/b", "127.0.0.1:5000/x_y__z", "a-b--c/d.e",
        f"x@sha256:{'a' * 64}", f"reg.example/x:t@sha256:{'b' * 64}", "Upper.example/x",
    ]  # fmt: skip
    refused = ["Ubuntu", "x:", ":x", "x//y", "x/", "-x", "x:t:t", "x@sha256:12", "[::1]:5000/x"]
    assert all(reference.problem(s) is None for s in samples)
    assert all(reference.problem(s) is not None for s in refused)

    async def ask() -> dict[str, int]:
        try:
            docker = await docker_support.connect()
        except docker_support.DockerUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        statuses = {}
        try:
            for name in [*samples, *refused]:
                try:
                    await docker.images.inspect(name)
                    statuses[name] = 200
                except aiodocker.DockerError as exc:
                    statuses[name] = exc.status
                except aiohttp.ClientError:  # the engine's URL router redirects, say
                    statuses[name] = -1
        finally:
            await docker.close()
        return statuses

    statuses = asyncio.run(ask())
    assert {s: statuses[s] for s in samples} == dict.fromkeys(samples, 404)
    assert all(statuses[s] != 404 or s == "Ubuntu" for s in refused), statuses
