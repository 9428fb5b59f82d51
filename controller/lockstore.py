"""The lock table's edge: a JetStream KV bucket of `LockRecord`s, by revision.

Create is atomic and update and delete take the revision read last, so
whoever writes with a stale revision is told so (None or False) and decides
again (`controller.locks`). Every call has a timeout; nats-py's errors become
`StoreError`.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from controller.jetstream import StoreError, describe
from controller.locks import LockRecord
from shared import bus, subjects

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(LockRecord)
_encoder = msgspec.json.Encoder()


class LockStore:
    def __init__(self, nc: bus.NatsClient, *, replicas: int, timeout: float) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._replicas = replicas
        self._timeout = timeout
        self._kv: KeyValue | None = None

    async def ensure(self) -> None:
        """Bind the bucket, creating it (with `replicas` copies) when it is not there."""
        try:
            async with asyncio.timeout(self._timeout * 2):
                try:
                    self._kv = await self._js.key_value(subjects.LOCK_BUCKET)
                except nats.js.errors.BucketNotFoundError:
                    config = KeyValueConfig(
                        bucket=subjects.LOCK_BUCKET, history=1, replicas=self._replicas
                    )
                    self._kv = await self._js.create_key_value(config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot set up the lock table: {describe(exc)}") from None

    async def get(self, key: str) -> tuple[LockRecord, int] | None:
        kv = await self._bucket()
        try:
            async with asyncio.timeout(self._timeout):
                entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # never set, or deleted
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot read lock {key}: {describe(exc)}") from None
        if entry.value is None:
            return None
        try:
            return _decoder.decode(entry.value), entry.revision or 0
        except msgspec.DecodeError:
            log.warning("unreadable lock record %s; it is replaced", key)
            return None

    async def create(self, key: str, record: LockRecord) -> int | None:
        """The new revision, or None when the lock is held already."""
        kv = await self._bucket()
        try:
            async with asyncio.timeout(self._timeout):
                return await kv.create(key, _encoder.encode(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot create lock {key}: {describe(exc)}") from None

    async def update(self, key: str, record: LockRecord, revision: int) -> int | None:
        """The new revision, or None when the record changed since `revision`."""
        kv = await self._bucket()
        try:
            async with asyncio.timeout(self._timeout):
                return await kv.update(key, _encoder.encode(record), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot update lock {key}: {describe(exc)}") from None

    async def delete(self, key: str, revision: int) -> bool:
        """Free the lock if it is still at `revision` (False: it changed meanwhile)."""
        kv = await self._bucket()
        try:
            async with asyncio.timeout(self._timeout):
                await kv.delete(key, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot free lock {key}: {describe(exc)}") from None
        return True

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            await self.ensure()
        assert self._kv is not None
        return self._kv
