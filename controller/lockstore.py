"""The lock table's edge: a JetStream KV bucket of `LockRecord`s, by revision.

Create is atomic and update and delete take the revision read last, so
whoever writes with a stale revision is told so (None or False) and decides
again (`controller.locks`). Every call has a timeout; nats-py's errors become
`StoreError`.

Creates and updates, two per new lock, are one stored publish each, sent as a
plain request with the expected-revision header and its acknowledgement read
with msgspec: a third of the CPU of the library's KV client, which wraps the
same publish in several layers. A refused create reads the key once: a
tombstone (the lock was freed) is written over at its revision, as the
library's own create does; a live record means the lock is held.
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
EXPECTED_REVISION = "Nats-Expected-Last-Subject-Sequence"
WRONG_REVISION_CODES = frozenset({10071, 10164})  # JetStream's "wrong last sequence" errors


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    """JetStream's answer to a stored publish: the new sequence, or an error."""

    seq: int = 0
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_Ack)


class LockStore:
    def __init__(self, nc: bus.NatsClient, *, replicas: int, timeout: float) -> None:
        self._nc = nc
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
        payload = _encoder.encode(record)
        revision = await self._write(key, payload, 0, "create")
        if revision is not None:
            return revision
        kv = await self._bucket()  # held, or a tombstone (the lock was freed): which?
        try:
            async with asyncio.timeout(self._timeout):
                await kv.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            if exc.entry is not None and exc.entry.revision:  # a tombstone: write over it
                return await self._write(key, payload, exc.entry.revision, "create")
            return None  # gone again since: the caller reads and decides again
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot create lock {key}: {describe(exc)}") from None
        return None

    async def update(self, key: str, record: LockRecord, revision: int) -> int | None:
        """The new revision, or None when the record changed since `revision`."""
        return await self._write(key, _encoder.encode(record), revision, "update")

    async def _write(self, key: str, payload: bytes, last: int, verb: str) -> int | None:
        """Store `payload` at `key` if its revision is `last` (0: no record yet)."""
        await self._bucket()
        subject = f"{subjects.LOCK_SUBJECT_PREFIX}{key}"
        headers = {EXPECTED_REVISION: str(last)}
        try:
            reply = await self._nc.request(subject, payload, timeout=self._timeout, headers=headers)
            ack = _ack_decoder.decode(reply.data)
        except nats.errors.Error as exc:
            raise StoreError(f"cannot {verb} lock {key}: {describe(exc)}") from None
        except msgspec.DecodeError:
            raise StoreError(f"cannot {verb} lock {key}: unreadable acknowledgement") from None
        if ack.error is None:
            return ack.seq
        if ack.error.err_code in WRONG_REVISION_CODES:
            return None
        raise StoreError(f"cannot {verb} lock {key}: {ack.error.description}")

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
