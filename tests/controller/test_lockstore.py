"""The lock table's edge against a real JetStream: what each write answers when it
wins, when it loses a race, and when the lock was freed before."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.jetstream import StoreError
from controller.locks import LockRecord, lock_key
from controller.lockstore import LockStore
from shared import bus, subjects
from shared.protocol import utc_now
from tests.support.natsserver import NatsServer

CLUSTER = "plane.test"


def record(backend: str, drone: str | None = None) -> LockRecord:
    return LockRecord(
        cluster=CLUSTER, lock="doc", backend_id=backend, claimed_at=utc_now(), drone=drone
    )


async def store(nc: bus.NatsClient) -> LockStore:
    locks = LockStore(nc, replicas=1, timeout=2.0)
    await locks.ensure()
    return locks


async def test_a_create_wins_once_and_updates_need_the_latest_revision(
    nc: bus.NatsClient,
) -> None:
    locks = await store(nc)
    key = lock_key(CLUSTER, "doc")
    first = await locks.create(key, record("b1"))
    assert first is not None
    assert await locks.create(key, record("b2")) is None  # held already
    held = await locks.update(key, record("b1", drone="d1"), first)
    assert held is not None and held > first
    assert await locks.update(key, record("b1", drone="d2"), first) is None  # stale revision
    found = await locks.get(key)
    assert found is not None and found[0].drone == "d1" and found[1] == held


async def test_a_freed_lock_is_created_again_over_its_tombstone(nc: bus.NatsClient) -> None:
    locks = await store(nc)
    key = lock_key(CLUSTER, "doc")
    revision = await locks.create(key, record("b1"))
    assert revision is not None
    assert await locks.delete(key, revision)
    assert await locks.get(key) is None
    again = await locks.create(key, record("b2"))
    assert again is not None and again > revision
    found = await locks.get(key)
    assert found is not None and found[0].backend_id == "b2"


async def test_writes_to_a_removed_table_raise_store_error(nc: bus.NatsClient) -> None:
    locks = await store(nc)
    await nc.jetstream().delete_key_value(subjects.LOCK_BUCKET)
    key = lock_key(CLUSTER, "doc")
    with pytest.raises(StoreError, match="cannot create lock"):
        await locks.create(key, record("b1"))
    with pytest.raises(StoreError, match="cannot update lock"):
        await locks.update(key, record("b1"), 1)


async def test_a_table_without_jetstream_raises_store_error(tmp_path: Path) -> None:
    server = await NatsServer.start(tmp_path / "plain", jetstream=False)
    client = await bus.connect(bus.NatsSettings(servers=[server.url]), name="t", wait_forever=False)
    try:
        locks = LockStore(client, replicas=1, timeout=0.5)
        with pytest.raises(StoreError):
            await locks.create(lock_key(CLUSTER, "doc"), record("b1"))
    finally:
        await client.close()
        await server.stop()
