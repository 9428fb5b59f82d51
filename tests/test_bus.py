"""The typed NATS helpers against a real nats-server."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared import bus, protocol, wire
from tests.support.natsserver import NatsServer

SUBJECT = "cluster.plane_dev.schedule"


async def echo_backend_id(
    request: protocol.ScheduleRequest, subject: str
) -> protocol.ScheduleReply:
    return protocol.scheduled(drone=subject, backend_id=request.backend_id or "generated")


def seed(backend_id: str | None = None) -> protocol.ScheduleRequest:
    return protocol.ScheduleRequest(
        cluster="plane.dev",
        backend_id=backend_id,
        executable=protocol.Executable(image="plane-testbackend:latest"),
    )


async def test_request_reply_through_typed_helpers(nc: bus.NatsClient) -> None:
    endpoint = await bus.serve(nc, "cluster.*.schedule", protocol.ScheduleRequest, echo_backend_id)
    reply = await bus.request(nc, SUBJECT, seed("b1"), protocol.ScheduleResponse)
    assert isinstance(reply, protocol.ScheduleReply) and reply.Scheduled is not None
    assert reply.Scheduled.backend_id == "b1"
    assert reply.Scheduled.drone == SUBJECT
    await endpoint.stop()


async def test_bad_payload_gets_invalid_request_naming_the_field(nc: bus.NatsClient) -> None:
    await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, echo_backend_id)
    raw = await nc.request(
        SUBJECT, b'{"cluster": "plane.dev", "executable": {"image": 5}}', timeout=5
    )
    assert json.loads(raw.data) == {
        "InvalidRequest": {"message": "executable.image: expected a string, got an integer"}
    }
    garbage = await nc.request(SUBJECT, bytes(range(256)) * 1000, timeout=5)
    assert "InvalidRequest" in json.loads(garbage.data)
    # The endpoint still serves good requests afterwards.
    reply = await bus.request(nc, SUBJECT, seed("b2"), protocol.ScheduleResponse)
    assert isinstance(reply, protocol.ScheduleReply) and reply.Scheduled is not None


async def test_publish_without_reply_subject_is_dropped_and_serving_goes_on(
    nc: bus.NatsClient,
) -> None:
    calls: list[str] = []

    async def handler(request: protocol.ScheduleRequest, subject: str) -> protocol.ScheduleReply:
        calls.append(request.backend_id or "")
        return await echo_backend_id(request, subject)

    await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, handler)
    await nc.publish(SUBJECT, wire.encode(seed("dropped")))
    await nc.publish(SUBJECT, b"garbage without a reply subject")
    reply = await bus.request(nc, SUBJECT, seed("after"), protocol.ScheduleResponse)
    assert isinstance(reply, protocol.ScheduleReply) and reply.Scheduled is not None
    assert calls == ["after"]


async def test_handler_exception_is_answered_and_survived(nc: bus.NatsClient) -> None:
    async def flaky(request: protocol.ScheduleRequest, subject: str) -> protocol.ScheduleReply:
        if request.backend_id == "boom":
            raise RuntimeError("boom")
        return await echo_backend_id(request, subject)

    await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, flaky)
    reply = await bus.request(nc, SUBJECT, seed("boom"), protocol.ScheduleResponse)
    assert isinstance(reply, protocol.ScheduleReply) and reply.InvalidRequest is not None
    assert "internal error" in reply.InvalidRequest.message
    ok = await bus.request(nc, SUBJECT, seed("fine"), protocol.ScheduleResponse)
    assert isinstance(ok, protocol.ScheduleReply) and ok.Scheduled is not None


async def test_handlers_run_concurrently(nc: bus.NatsClient) -> None:
    release = asyncio.Event()
    waiting = 0

    async def slow(request: protocol.ScheduleRequest, subject: str) -> protocol.ScheduleReply:
        nonlocal waiting
        waiting += 1
        if waiting == 5:
            release.set()
        await release.wait()
        return await echo_backend_id(request, subject)

    await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, slow)
    replies = await asyncio.gather(
        *(bus.request(nc, SUBJECT, seed(f"b{i}"), protocol.ScheduleResponse) for i in range(5))
    )
    assert len(replies) == 5


async def test_queue_group_delivers_each_request_once(nc: bus.NatsClient) -> None:
    seen: list[str] = []

    async def record(request: protocol.ScheduleRequest, subject: str) -> protocol.ScheduleReply:
        seen.append(request.backend_id or "")
        return await echo_backend_id(request, subject)

    for _ in range(3):
        await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, record, queue="q")
    for i in range(20):
        await bus.request(nc, SUBJECT, seed(f"b{i}"), protocol.ScheduleResponse)
    assert sorted(seen) == sorted(f"b{i}" for i in range(20))


async def test_request_errors_are_translated(nc: bus.NatsClient) -> None:
    with pytest.raises(bus.NoResponders):
        await bus.request(nc, "nobody.home", seed(), protocol.ScheduleResponse, timeout=2)

    async def never(request: protocol.ScheduleRequest, subject: str) -> None:
        await asyncio.Event().wait()

    await bus.serve(nc, "slow.subject", protocol.ScheduleRequest, never)
    with pytest.raises(bus.RequestTimeout):
        await bus.request(nc, "slow.subject", seed(), protocol.ScheduleResponse, timeout=0.3)


async def test_connect_without_server_fails_clearly_for_the_cli() -> None:
    settings = bus.NatsSettings(servers=["nats://127.0.0.1:1"], connect_timeout_secs=1)
    with pytest.raises(bus.BusUnavailable, match="cannot reach NATS"):
        await bus.connect(settings, name="test", wait_forever=False)


async def test_client_reconnects_after_server_restart(nats_server: NatsServer) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    settings = bus.NatsSettings(servers=[nats_server.url], reconnect_wait_secs=0.1)
    nc = await bus.connect(settings, name="test", on_reconnect=on_reconnect)
    try:
        await bus.serve(nc, SUBJECT, protocol.ScheduleRequest, echo_backend_id)
        await nats_server.restart()
        await asyncio.wait_for(reconnected.wait(), 20)
        reply = await bus.request(nc, SUBJECT, seed("again"), protocol.ScheduleResponse)
        assert isinstance(reply, protocol.ScheduleReply) and reply.Scheduled is not None
    finally:
        await nc.close()


async def test_several_servers_run_at_once(tmp_path: pytest.TempPathFactory) -> None:
    servers = [await NatsServer.start(tmp_path / f"s{i}") for i in range(3)]  # type: ignore[operator]
    try:
        assert len({s.port for s in servers}) == 3
    finally:
        for server in servers:
            await server.stop()


async def test_ensure_stream_is_idempotent(nc: bus.NatsClient) -> None:
    for _ in range(2):
        await bus.ensure_stream(
            nc, "backend_status", ["backend.*.status"], max_msgs_per_subject=100, max_age_secs=3600
        )
    info = await nc.jetstream().stream_info("backend_status")
    assert info.config.max_msgs_per_subject == 100
