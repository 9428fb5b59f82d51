"""The controller process: wires the registry, index, scheduler, relay and DNS to NATS.

Start-up order matters for "a restarted controller knows everything":

1. connect and make sure the streams exist;
2. subscribe the feeds every controller hears (heartbeats, drone
   registrations, stored backend states, DNS records), then read the streams
   back (last state of each backend, the last minute of DNS records); an
   entry seen twice is harmless, one missed is not;
3. listen to heartbeats for `warmup` (one heartbeat by default), so the first
   schedule request does not find an empty registry;
4. take work in the controllers' queue group: schedule, state relay,
   listings, ACME records.

`stop` undoes it in reverse: work subjects first (requests in flight finish,
for at most `shutdown_grace_secs`), then feeds, servers and the connection.
When NATS goes away nats-py reconnects and re-subscribes on its own; silence
during the outage is not held against drones, and the streams are read again
to catch up on what was stored meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec

from controller import identity
from controller.config import ControllerSettings, check, enabled
from controller.dns import DnsServer
from controller.dnsanswer import Soa
from controller.dnsfeed import DnsFeed
from controller.dnsrecords import RecordStore
from controller.dnsview import ZoneView
from controller.fencing import plan as fence_plan
from controller.identity import Refusal
from controller.index import BackendIndex
from controller.jetstream import (
    DNS_RECORD_READ,
    DNS_RECORD_SUBJECTS,
    DRONE_DNS_RECORD_SUBJECTS,
    JetStream,
    StoreError,
    StreamLimits,
)
from controller.lockstore import LockStore
from controller.metrics import ControllerMetrics
from controller.readback import ReadBack
from controller.registry import (
    Change,
    DroneForgotten,
    DroneJoined,
    DroneLost,
    DroneRegistry,
    DroneStateChanged,
)
from controller.relay import StateRelay
from controller.scheduler import Scheduler
from shared import bus, metrics, subjects, wire
from shared.config import ConfigError
from shared.protocol import (
    BackendInfo,
    BackendStateMessage,
    DroneConnectRequest,
    DroneInfo,
    DroneStatusMessage,
    FenceBackends,
    FetchRequest,
    ScheduleRequest,
    SetAcmeDnsRecord,
    SetDnsRecord,
    UpdateBackendStateMessage,
    utc_now,
)

log = logging.getLogger(__name__)

PRUNE_EVERY_SECS = 60.0
YIELD_EVERY_HEARTBEATS = 32


class ControllerError(Exception):
    """The controller cannot start; the message says why."""


class ListRequest(msgspec.Struct):
    """Body of a listing request: `null` or `{}` (fields are ignored)."""


class Controller:
    def __init__(self, settings: ControllerSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.metrics = ControllerMetrics()
        try:
            check(settings)
        except ConfigError as exc:
            raise ControllerError(str(exc)) from None
        clusters = list(dict.fromkeys(settings.clusters))
        self.clusters = clusters
        self.registry = DroneRegistry(
            fresh_secs=settings.fresh_secs,
            lost_after_secs=settings.lost_after_secs,
            forget_after_secs=settings.forget_lost_after_secs,
            clusters=frozenset(clusters) if clusters else None,
            rng=rng,
            max_drones=settings.max_drones,
        )
        self.index = BackendIndex(lost_hold=timedelta(seconds=settings.forget_lost_after_secs))
        self.records = RecordStore(
            a_expiry_secs=settings.dns.a_record_expiry_secs,
            txt_expiry_secs=settings.dns.txt_record_expiry_secs,
        )
        dns = settings.dns
        self.zones = ZoneView(
            index=self.index,
            registry=self.registry,
            store=self.records,
            soa=Soa(mname=dns.soa_mname, rname=dns.soa_email, ttl=dns.ttl_secs),
            clusters=clusters,
        )
        self._nc: bus.NatsClient | None = None
        self._feeds: list[bus.Endpoint[Any]] = []
        self._work: list[bus.Endpoint[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._dns: DnsServer | None = None
        self._metrics_server: metrics.MetricsServer | None = None
        self._stopping = False
        self._heartbeats = 0

    # --- ports, for tests and the log ---------------------------------------

    @property
    def dns_port(self) -> int | None:
        return self._dns.port if self._dns is not None else None

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    # --- life ----------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._nc = nc = await bus.connect(
            s.nats,
            name="plane-controller",
            wait_forever=True,
            on_reconnect=self._on_reconnect,
            on_disconnect=self._on_disconnect,
        )
        self.metrics.nats_connected.set(1)
        store = JetStream(
            nc,
            StreamLimits(s.status_max_age_secs, s.status_max_per_subject, s.stream_replicas),
            timeout=s.nats_timeout_secs,
        )
        self._store = store
        self.relay = StateRelay(store, self.index, self.metrics)

        async def read_last(backend: str) -> bytes | None:
            return await store.last(
                subjects.BACKEND_STATUS_STREAM, subjects.backend_status(backend)
            )

        self._readback = ReadBack(read_last, self.index.settle)
        self._dns_feed = DnsFeed(
            self.records,
            store,
            on_cluster=self.zones.note_cluster,
            may_set=self._drone_may_set,
            on_refused=self.metrics.refused[Refusal.BAD_RECORD].inc,
        )
        locks = LockStore(nc, replicas=store.replicas, timeout=s.nats_timeout_secs)
        self._locks = locks
        scheduler = Scheduler(
            nc,
            self.registry,
            self.index,
            self.metrics,
            locks,
            spawn_timeout=s.spawn_timeout_secs,
            attempts=s.spawn_attempts,
            on_cluster=self.zones.note_cluster,
        )
        self._scheduler = scheduler
        try:
            await store.ensure_streams()
            await locks.ensure()
            await self._subscribe_feeds(nc)
            # live feeds first, so nothing falls between them and the read
            await bus.settle(nc, self.settings.nats_timeout_secs)
            await self._catch_up()
        except StoreError as exc:
            raise ControllerError(str(exc)) from None
        await self._start_servers()
        self._spawn(self._housekeeping())
        self._spawn(self._readback.run())
        if s.warmup > 0:
            await asyncio.sleep(s.warmup)
        await self._subscribe_work(nc, scheduler)
        await bus.settle(nc, self.settings.nats_timeout_secs)
        log.info(
            "controller ready: clusters %s, %d drone(s) and %d backend(s) known%s%s",
            ", ".join(self.clusters) or "(all)",
            len(self.registry),
            len(self.index),
            f", DNS on port {self.dns_port}" if self._dns else "",
            f", metrics on port {self.metrics_port}" if self._metrics_server else "",
        )

    async def _subscribe_feeds(self, nc: bus.NatsClient) -> None:
        async def feed(subject: str, kind: Any, handler: Any) -> None:
            endpoint = await bus.serve(nc, subject, kind, handler, replies=False, concurrent=False)
            self._feeds.append(endpoint)

        await feed(subjects.DRONE_STATUS_ALL, DroneStatusMessage, self._on_status)
        await feed(subjects.DRONE_REGISTER, DroneConnectRequest, self._on_register)
        await feed(subjects.DRONE_REGISTER_ALL, DroneConnectRequest, self._on_register)
        await feed(subjects.BACKEND_STATUS_STREAM_SUBJECTS, BackendStateMessage, self._on_state)
        dns = [
            *self._per_cluster(lambda c: subjects.dns_record(c, "*"), DNS_RECORD_SUBJECTS),
            *self._per_cluster(
                lambda c: subjects.drone_dns_record(c, "*", "*"), DRONE_DNS_RECORD_SUBJECTS
            ),
        ]
        for subject in dns:
            await feed(subject, SetDnsRecord, self._dns_feed.on_record)

    async def _subscribe_work(self, nc: bus.NatsClient, scheduler: Scheduler) -> None:
        async def work(
            subject: str,
            kind: Any,
            handler: Any,
            error_reply: Callable[[str], Any] = bus.invalid_reply,
        ) -> None:
            endpoint = await bus.serve(
                nc,
                subject,
                kind,
                handler,
                queue=subjects.CONTROLLER_QUEUE,
                error_reply=error_reply,
            )
            self._work.append(endpoint)

        for subject in self._per_cluster(subjects.schedule, subjects.SCHEDULE_ALL):
            await work(subject, ScheduleRequest, scheduler.handle, scheduler.undecodable)
        for subject in self._per_cluster(subjects.fetch, subjects.FETCH_ALL):
            await work(subject, FetchRequest, scheduler.fetch)
        relay = [
            *self._per_cluster(
                lambda c: subjects.update_backend_state(c, "*"), subjects.BACKEND_STATUS_ALL
            ),
            *self._per_cluster(
                lambda c: subjects.drone_update_backend_state(c, "*", "*"),
                subjects.DRONE_BACKEND_STATUS_ALL,
            ),
        ]
        for subject in relay:
            await work(subject, UpdateBackendStateMessage, self.relay.handle_update)
        for subject in self._per_cluster(subjects.list_drones, subjects.LIST_DRONES_ALL):
            await work(subject, ListRequest | None, self._list_drones)
        for subject in self._per_cluster(subjects.list_backends, subjects.LIST_BACKENDS_ALL):
            await work(subject, ListRequest | None, self._list_backends)
        acme = [
            subjects.ACME_SET_DNS_RECORD,
            *self._per_cluster(lambda c: subjects.drone_acme(c, "*"), subjects.DRONE_ACME_ALL),
        ]
        for subject in acme:
            await work(
                subject,
                SetAcmeDnsRecord,
                self._dns_feed.handle_acme,
                lambda message: False,  # the 0.3 answer is a boolean, whatever went wrong
            )

    def _per_cluster(self, build: Callable[[str], str], wildcard: str) -> list[str]:
        return [build(c) for c in self.clusters] if self.clusters else [wildcard]

    async def _catch_up(self) -> None:
        """Read back the stored backend states and DNS records (idempotent)."""
        started = time.monotonic()
        states = await self._store.read(
            subjects.BACKEND_STATUS_STREAM,
            subjects.BACKEND_STATUS_STREAM_SUBJECTS,
            self._take_stored_state,
            last_per_subject=True,
        )
        records = await self._store.read(
            subjects.DNS_RECORD_STREAM,
            DNS_RECORD_READ,
            self._dns_feed.take_raw,
            last_per_subject=False,
        )
        log.info(
            "read %d backend state(s) and %d DNS record(s) from JetStream in %.2fs",
            states,
            records,
            time.monotonic() - started,
        )

    async def _start_servers(self) -> None:
        s = self.settings
        metrics_listen = enabled(s.metrics_listen)
        if metrics_listen is not None:
            try:
                self._metrics_server = metrics.serve(metrics_listen, self.metrics.registry)
            except OSError as exc:
                raise ControllerError(f"metrics on {metrics_listen}: {exc}") from None
        dns_listen = enabled(s.dns.listen)
        if dns_listen is not None:
            server = DnsServer(self.zones, self.metrics.dns_query, idle_secs=s.dns.tcp_idle_secs)
            try:
                await server.start(dns_listen)
            except OSError as exc:
                raise ControllerError(f"DNS on {dns_listen}: {exc}") from None
            self._dns = server

    async def stop(self) -> None:
        """Stop taking work, let requests in flight finish (bounded), then close."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_secs
        await asyncio.gather(*(endpoint.stop(timeout=grace) for endpoint in self._work))
        await asyncio.gather(*(endpoint.stop(timeout=1.0) for endpoint in self._feeds))
        self._work.clear()
        self._feeds.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._dns is not None:
            await self._dns.stop()
            self._dns = None
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)
            self._metrics_server = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._nc.close()
            self._nc = None

    # --- feeds ---------------------------------------------------------------

    def _refused_sender(self, subject: str, drone: str) -> bool:
        """A heartbeat or registration on another drone's subject: refused, and said so."""
        problem = identity.claimed_drone(subject, drone)
        if problem is None:
            return False
        self.metrics.refused[Refusal.SUBJECT_MISMATCH].inc()
        log.warning("refused: %s", problem, extra={"drone": drone})
        return True

    def _drone_may_set(self, record: SetDnsRecord, drone: str) -> str | None:
        backend = record.name.lower().rstrip(".").split(".")[0]
        return identity.dns_record(
            record, drone, self.index.get(backend), self.registry.ip_of(drone)
        )

    async def _on_status(self, msg: DroneStatusMessage, subject: str) -> None:
        if self._refused_sender(subject, msg.drone_id):
            return
        changes = self.registry.status(msg, time.monotonic(), utc_now())
        if changes:
            self.zones.note_cluster(msg.cluster)
            _log_changes(changes)
        if msg.backends is not None and self.registry.serves(msg.cluster):
            await self._fence(msg.drone_id, msg.cluster, msg.backends)
        self._heartbeats += 1
        if self._heartbeats % YIELD_EVERY_HEARTBEATS == 0:
            # A burst of heartbeats is handled without awaiting anything;
            # let schedule requests in between.
            await asyncio.sleep(0)

    async def _on_register(self, msg: DroneConnectRequest, subject: str) -> None:
        if self._refused_sender(subject, msg.drone_id):
            return
        changes = self.registry.register(msg, time.monotonic(), utc_now())
        self.zones.note_cluster(msg.cluster)
        log.info("drone registered from %s", msg.ip, extra={"drone": msg.drone_id})
        _log_changes(changes)

    async def _on_state(self, msg: BackendStateMessage, subject: str) -> None:
        if self.index.apply(msg):
            self.zones.note_cluster(msg.cluster)
        elif self.index.contests(msg):
            self._readback.add(msg.backend)
        if msg.state.terminal and self._scheduler.holds(msg.backend):
            self._spawn(self._scheduler.release(msg.backend))

    async def _fence(self, drone: str, cluster: str, running: list[str]) -> None:
        """Stop what the drone runs against the index; free the Lost IDs it no longer runs."""
        decided = fence_plan(drone, running, self.index)
        for backend in decided.cleared:
            self.index.clear_lost(backend)
        if not decided.fences:
            return
        for fence in decided.fences:
            log.warning(
                "drone still runs it (%s); telling it to stop",
                fence.reason,
                extra={"backend": fence.backend, "drone": drone},
            )
        self.metrics.fenced.inc(len(decided.fences))
        message = FenceBackends(cluster=cluster, drone=drone, backends=decided.fences)
        try:
            await bus.publish(self._nats(), subjects.drone_fence(drone), message)
        except Exception as exc:  # sent again with the next heartbeat
            log.warning("fence not sent: %s", exc, extra={"drone": drone})

    def _nats(self) -> bus.NatsClient:
        assert self._nc is not None, "the controller is not started"
        return self._nc

    def _take_stored_state(self, subject: str, data: bytes) -> None:
        try:
            msg = wire.decode(BackendStateMessage, data)
        except wire.InvalidMessage as exc:
            log.debug("unreadable backend state in the stream: %s", exc)
            return
        if self.index.settle(msg):
            self.zones.note_cluster(msg.cluster)

    # --- listings ------------------------------------------------------------

    async def _list_drones(self, body: ListRequest | None, subject: str) -> list[DroneInfo]:
        return self.registry.drones(_cluster_of(subject), time.monotonic())

    async def _list_backends(self, body: ListRequest | None, subject: str) -> list[BackendInfo]:
        return self.index.backends(_cluster_of(subject))

    # --- connection events ---------------------------------------------------

    async def _on_disconnect(self) -> None:
        self.registry.pause(time.monotonic())
        self.metrics.nats_connected.set(0)
        if not self._stopping:
            log.warning("NATS connection lost; reconnecting")

    async def _on_reconnect(self) -> None:
        self.registry.resume(time.monotonic())
        self.metrics.nats_connected.set(1)
        self.metrics.nats_reconnects.inc()
        log.info("NATS connection back; catching up from JetStream")
        self._spawn(self._resync())

    async def _resync(self) -> None:
        try:
            await self._store.ensure_streams()
            await self._locks.ensure()
            await self._catch_up()
        except StoreError as exc:
            log.warning("catching up after a reconnect failed: %s", exc)

    # --- housekeeping --------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Declare silent drones Lost, expire DNS records, prune the index, set gauges."""
        interval = min(1.0, self.settings.heartbeat_secs / 2)
        retention = timedelta(seconds=self.settings.status_max_age_secs)
        last_prune = time.monotonic()
        refused_seen = 0
        while True:
            now = time.monotonic()
            wall = utc_now()
            for drone, cluster in self.index.live_drones().items():
                self.registry.expect(drone, cluster, now, wall)
            _log_changes(self.registry.sweep(now))
            # Every tick, not once: a Lost state that could not be stored is tried again.
            for drone in self.registry.lost():
                if self.index.live_count(drone):
                    await self.relay.publish_lost(drone)
            self.records.expire(now)
            if now - last_prune >= PRUNE_EVERY_SECS:
                last_prune = now
                self.index.prune(wall, retention)
            self.metrics.set_drones(self.registry.count_by_state())
            refused = self.registry.refused_drones - refused_seen
            if refused:
                refused_seen += refused
                self.metrics.refused[Refusal.REGISTRY_FULL].inc(refused)
                log.warning(
                    "%d message(s) from new drones ignored: the registry holds %d (max_drones)",
                    refused,
                    len(self.registry),
                )
            self.metrics.set_backends(self.index.count_by_state())
            await asyncio.sleep(interval)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _cluster_of(subject: str) -> str:
    """`cluster.plane_dev.drones` → `plane.dev` (cluster names hold no `_`)."""
    token = subjects.token_at(subject, 1) or ""
    return token.replace("_", ".")


def _log_changes(changes: list[Change]) -> None:
    for change in changes:
        extra = {"drone": change.drone, "cluster": change.cluster}
        match change:
            case DroneJoined():
                log.info("drone joined", extra=extra)
            case DroneStateChanged(old=old, new=new):
                log.info("drone %s → %s", old.value, new.value, extra=extra)
            case DroneLost():
                log.warning("drone lost: silent too long", extra=extra)
            case DroneForgotten():
                log.info("lost drone forgotten", extra=extra)
