"""The controller's JetStream edge: its streams, stored publishes, catch-up reads.

Every call has a timeout and nats-py's errors become `StoreError`, so callers
decide what a failure means (not acking a drone, trying again later) without
importing library exception types. A publish that finds no stream (it was
deleted, or the server came back with an empty store) re-creates the
controller's streams once and tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from shared import bus, subjects

log = logging.getLogger(__name__)

DNS_RECORD_SUBJECTS = "cluster.*.dns.*"
DRONE_DNS_RECORD_SUBJECTS = "cluster.*.drone.*.dns.*"  # (ext) set by the drone the subject names
DNS_RECORD_READ = "cluster.>"  # every subject of the dns_record stream
BACKEND_LOG_MAX_PER_SUBJECT = 500
DNS_RECORD_MAX_AGE_SECS = 60.0
MSG_ID = "Nats-Msg-Id"


class StoreError(Exception):
    """JetStream did not take or give what was asked."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    status_max_age_secs: float
    status_max_per_subject: int
    replicas: int | None = None  # None: as many as the NATS cluster has servers, up to 3


MAX_DEFAULT_REPLICAS = 3


class JetStream:
    def __init__(self, nc: bus.NatsClient, limits: StreamLimits, *, timeout: float) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._limits = limits
        self._timeout = timeout

    async def ensure_streams(self) -> None:
        """Create or update `backend_status` (bounded by age and per backend), `dns_record`
        and `backend_log`, each with `replicas` copies (never fewer than they have)."""
        replicas = self.replicas
        try:
            async with asyncio.timeout(self._timeout * 2):
                await bus.ensure_stream(
                    self._nc,
                    subjects.BACKEND_STATUS_STREAM,
                    [subjects.BACKEND_STATUS_STREAM_SUBJECTS],
                    max_msgs_per_subject=self._limits.status_max_per_subject,
                    max_age_secs=self._limits.status_max_age_secs,
                    replicas=replicas,
                )
                await bus.ensure_stream(
                    self._nc,
                    subjects.DNS_RECORD_STREAM,
                    [DNS_RECORD_SUBJECTS, DRONE_DNS_RECORD_SUBJECTS],
                    max_age_secs=DNS_RECORD_MAX_AGE_SECS,
                    replicas=replicas,
                )
                # Drones publish their backends' output into it; with least privilege
                # they may not create streams, so the controllers do.
                await bus.ensure_stream(
                    self._nc,
                    subjects.BACKEND_LOG_STREAM,
                    [subjects.BACKEND_LOG_STREAM_SUBJECTS],
                    max_msgs_per_subject=BACKEND_LOG_MAX_PER_SUBJECT,
                    replicas=replicas,
                )
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot set up JetStream streams: {describe(exc)}") from None

    @property
    def replicas(self) -> int:
        """The setting, else the NATS cluster's size up to 3 (R1 on a single server)."""
        if self._limits.replicas is not None:
            return self._limits.replicas
        return min(MAX_DEFAULT_REPLICAS, bus.cluster_size(self._nc))

    async def publish(
        self, stream: str, subject: str, payload: bytes, msg_id: str | None = None
    ) -> bool:
        """Store one message; returns False when JetStream dropped it as a duplicate."""
        headers = {MSG_ID: msg_id} if msg_id else None
        for attempt in (1, 2):
            try:
                ack = await self._js.publish(
                    subject, payload, timeout=self._timeout, headers=headers
                )
            except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError) as exc:
                # No stream answered. With other subscribers on the subject that
                # looks like a timeout, so ask whether the stream is there at all.
                if attempt == 2 or await self._stream_exists(stream):
                    raise StoreError(f"{subject} not stored: {describe(exc)}") from None
                log.warning("stream %s is missing; setting up the streams again", stream)
                await self.ensure_streams()
            except (nats.errors.Error, TimeoutError) as exc:
                raise StoreError(f"{subject} not stored: {describe(exc)}") from None
            else:
                return not ack.duplicate
        raise AssertionError("unreachable")

    async def last(self, stream: str, subject: str) -> bytes | None:
        """The last message stored on `subject` (None: none is), read from the stream's leader."""
        try:
            async with asyncio.timeout(self._timeout):
                msg = await self._js.get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot read {subject}: {describe(exc)}") from None
        return msg.data

    async def _stream_exists(self, stream: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot look up stream {stream}: {describe(exc)}") from None
        return True

    async def read(
        self,
        stream: str,
        subject: str,
        on_message: Callable[[str, bytes], None],
        *,
        last_per_subject: bool,
    ) -> int:
        """Feed every stored message (or the last of each subject) to `on_message(subject,
        data)`, oldest first.

        Reads until the consumer reports nothing pending; returns how many were read.
        """
        try:
            async with asyncio.timeout(self._timeout):
                info = await self._js.stream_info(stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(f"cannot read stream {stream}: {describe(exc)}") from None
        if not info.state.messages:
            return 0
        policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
        count = 0
        try:
            async with asyncio.timeout(self._timeout):
                sub = await self._js.subscribe(
                    subject, stream=stream, ordered_consumer=True, deliver_policy=policy
                )
            try:
                while True:
                    msg = await sub.next_msg(timeout=self._timeout)
                    count += 1
                    on_message(msg.subject, msg.data)
                    if msg.metadata.num_pending == 0:
                        return count
            finally:
                try:
                    async with asyncio.timeout(self._timeout):
                        await sub.unsubscribe()
                except (nats.errors.Error, TimeoutError) as exc:
                    log.debug("unsubscribe from %s: %s", stream, exc)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StoreError(
                f"reading stream {stream} stopped after {count} messages: {describe(exc)}"
            ) from None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
