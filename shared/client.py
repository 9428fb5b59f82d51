"""An async client library for Plane clusters, for people who schedule from Python.

    async with await PlaneClient.connect("nats://127.0.0.1:4222", "plane.dev") as plane:
        backend = await plane.schedule(image="ghcr.io/me/app:latest", max_idle_secs=60)
        await plane.wait_for_state(backend.backend_id, BackendState.READY)
        print(plane.url(backend.backend_id))

Every failure is a `PlaneError` with a one-line reason: `NoDroneAvailable`,
`InvalidRequest`, `BackendFailed` (a terminal state came before the one
awaited), `Timeout`, `Unavailable` (NATS cannot be reached).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from shared import bus, subjects, wire
from shared.protocol import (
    NO_BACKEND_FOR_LOCK,
    NO_DRONE_AVAILABLE,
    BackendInfo,
    BackendState,
    BackendStateMessage,
    BackendStatsMessage,
    DockerCredentials,
    DrainDrone,
    DroneInfo,
    DroneLogMessage,
    Executable,
    FetchRequest,
    FetchResponse,
    PullPolicy,
    ResourceLimits,
    ScheduledBackend,
    ScheduleReply,
    ScheduleRequest,
    ScheduleResponse,
    TerminationRequest,
    UsernamePasswordCredentials,
)


class PlaneError(Exception):
    """Anything that kept a client call from succeeding."""


class NoDroneAvailable(PlaneError):
    pass


class InvalidRequest(PlaneError):
    pass


class Timeout(PlaneError):
    pass


class Unavailable(PlaneError):
    pass


class NotFound(PlaneError):
    pass


class _JetStreamAway(Exception):
    """A JetStream call got no answer: worth another try while there is time."""


RETRY_PAUSE_SECS = 0.5


class BackendFailed(PlaneError):
    def __init__(self, message: BackendStateMessage) -> None:
        super().__init__(f"backend {message.backend} ended as {message.state.value}")
        self.message = message


def _translate(exc: bus.BusError) -> PlaneError:
    if isinstance(exc, bus.RequestTimeout):
        return Timeout(str(exc))
    if isinstance(exc, bus.NoResponders):
        return Unavailable(f"{exc} (is a controller or drone running for this cluster?)")
    if isinstance(exc, bus.BusUnavailable):
        return Unavailable(str(exc))
    return PlaneError(str(exc))


def _scheduled(reply: ScheduleReply) -> ScheduledBackend:
    """The backend of a `{"Scheduled": ...}` reply; `InvalidRequest` for the other kind."""
    assert isinstance(reply, ScheduleReply)
    if reply.InvalidRequest is not None:
        raise InvalidRequest(reply.InvalidRequest.message)
    assert reply.Scheduled is not None
    return reply.Scheduled


@contextlib.contextmanager
def _jetstream_call(not_found: str) -> Iterator[None]:
    """nats-py's JetStream exceptions as PlaneErrors (`not_found` says what was missing);
    "503 temporarily unavailable", while a stream elects a leader, is `Unavailable`."""
    try:
        yield
    except nats.js.errors.NotFoundError:
        raise NotFound(not_found) from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise Timeout("no answer from JetStream (is NATS running with JetStream?)") from None
    except nats.errors.Error as exc:
        raise Unavailable(f"JetStream: {exc}") from None


def build_request(
    cluster: str,
    *,
    image: str,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    max_idle_secs: int = 30,
    metadata: Mapping[str, str] | None = None,
    backend_id: str | None = None,
    require_bearer_token: bool = False,
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT,
    username: str | None = None,
    password: str | None = None,
    limits: ResourceLimits | None = None,
    volume_mounts: list[dict[str, Any]] | None = None,
    lock: str | None = None,
    lifetime_limit_secs: int | None = None,
    termination_grace_secs: int | None = None,
    pool: str | None = None,
) -> ScheduleRequest:
    """A ScheduleRequest from keyword arguments, validated like the controller would."""
    credentials = None
    if username is not None or password is not None:
        credentials = DockerCredentials(
            UsernamePassword=UsernamePasswordCredentials(
                username=username or "", password=password or ""
            )
        )
    raw = ScheduleRequest(
        cluster=cluster,
        backend_id=backend_id,
        max_idle_secs=max_idle_secs,
        metadata=dict(metadata or {}),
        require_bearer_token=require_bearer_token,
        lock=lock,
        lifetime_limit_secs=lifetime_limit_secs,
        termination_grace_secs=termination_grace_secs,
        pool=pool,
        executable=Executable(
            image=image,
            env=dict(env or {}),
            credentials=credentials,
            resource_limits=limits or ResourceLimits(),
            pull_policy=pull_policy,
            port=port,
            volume_mounts=list(volume_mounts or []),
        ),
    )
    try:
        # Round-trip through the wire decoder so the same rules apply as on the server.
        return wire.decode(ScheduleRequest, wire.encode(raw))
    except wire.InvalidMessage as exc:
        raise InvalidRequest(str(exc)) from None


class PlaneClient:
    """One NATS connection, one cluster."""

    def __init__(
        self, nc: bus.NatsClient, cluster: str, *, timeout: float = 10.0, scheme: str = "https"
    ) -> None:
        self.nc = nc
        self.cluster = cluster
        self.timeout = timeout
        self.scheme = scheme

    @classmethod
    async def connect(
        cls,
        nats_settings: bus.NatsSettings | str | list[str],
        cluster: str,
        *,
        timeout: float = 10.0,
        scheme: str = "https",
    ) -> PlaneClient:
        if isinstance(nats_settings, str):
            nats_settings = bus.NatsSettings(servers=nats_settings.split(","))
        elif isinstance(nats_settings, list):
            nats_settings = bus.NatsSettings(servers=nats_settings)
        try:
            nc = await bus.connect(nats_settings, name="plane-client", wait_forever=False)
        except bus.BusUnavailable as exc:
            raise Unavailable(str(exc)) from None
        return cls(nc, cluster, timeout=timeout, scheme=scheme)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def url(self, backend_id: str) -> str:
        return f"{self.scheme}://{backend_id}.{self.cluster}/"

    async def _request(self, subject: str, message: Any, reply_type: Any) -> Any:
        try:
            return await bus.request(self.nc, subject, message, reply_type, timeout=self.timeout)
        except bus.BusError as exc:
            raise _translate(exc) from None

    # --- scheduling ----------------------------------------------------------

    async def schedule(
        self, request: ScheduleRequest | None = None, **fields: Any
    ) -> ScheduledBackend:
        """Ask for a backend; `fields` are `build_request`'s keyword arguments."""
        if request is None:
            request = build_request(self.cluster, **fields)
        reply: ScheduleResponse = await self._request(
            subjects.schedule(request.cluster), request, ScheduleResponse
        )
        if reply == NO_DRONE_AVAILABLE:
            raise NoDroneAvailable(f"no drone available in cluster {request.cluster}")
        return _scheduled(reply)

    async def fetch(self, lock: str) -> ScheduledBackend | None:
        """The backend holding `lock` in this cluster (None: none does); never spawns."""
        request = FetchRequest(cluster=self.cluster, lock=lock)
        reply: FetchResponse = await self._request(
            subjects.fetch(self.cluster), request, FetchResponse
        )
        if reply == NO_BACKEND_FOR_LOCK:
            return None
        return _scheduled(reply)

    async def terminate(self, backend_id: str, *, hard: bool = False) -> None:
        """Stop a backend: SIGTERM, its grace period, then SIGKILL; `hard`: SIGKILL now."""
        await self._request(
            subjects.terminate(self.cluster, backend_id),
            TerminationRequest(cluster_id=self.cluster, backend_id=backend_id, hard=hard),
            None,
        )

    async def drain(self, drone_id: str, drain: bool = True) -> None:
        await self._request(
            subjects.drain(self.cluster, drone_id),
            DrainDrone(drone=drone_id, cluster=self.cluster, drain=drain),
            None,
        )

    async def drones(self) -> list[DroneInfo]:
        result: list[DroneInfo] = await self._request(
            subjects.list_drones(self.cluster), None, list[DroneInfo]
        )
        return result

    async def backends(self) -> list[BackendInfo]:
        result: list[BackendInfo] = await self._request(
            subjects.list_backends(self.cluster), None, list[BackendInfo]
        )
        return result

    # --- state ---------------------------------------------------------------

    async def status(self, backend_id: str) -> BackendStateMessage:
        """The latest stored state of a backend."""
        with _jetstream_call(f"no state known for backend {backend_id}"):
            raw = await self.nc.jetstream().get_last_msg(
                subjects.BACKEND_STATUS_STREAM, subjects.backend_status(backend_id)
            )
        assert raw.data is not None
        return wire.decode(BackendStateMessage, raw.data)

    async def _stream(
        self, subject: str, kind: type[Any], *, history: bool, timeout: float | None
    ) -> AsyncIterator[Any]:
        policy = DeliverPolicy.ALL if history else DeliverPolicy.NEW
        with _jetstream_call(f"no stream holds {subject} (is a controller running?)"):
            sub = await self.nc.jetstream().subscribe(
                subject, ordered_consumer=True, deliver_policy=policy
            )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=timeout if timeout is not None else 3600)
                except nats.errors.TimeoutError:
                    if timeout is not None:
                        raise Timeout(f"nothing on {subject} within {timeout:g}s") from None
                    continue
                try:
                    yield wire.decode(kind, msg.data)
                except wire.InvalidMessage:
                    continue
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def watch_states(
        self, backend_id: str, *, history: bool = True, timeout: float | None = None
    ) -> AsyncIterator[BackendStateMessage]:
        """Every state of a backend (from the first with `history`); ends after a terminal one."""
        async for message in self._stream(
            subjects.backend_status(backend_id),
            BackendStateMessage,
            history=history,
            timeout=timeout,
        ):
            yield message
            if message.state.terminal:
                return

    async def follow_states(
        self, backend_id: str, *, timeout: float
    ) -> AsyncIterator[BackendStateMessage]:
        """Every state of a backend, from the first, until a terminal one, within `timeout`
        in all (`Timeout` after that).

        JetStream being away for a while (the stream's node restarting, a new leader
        being elected) is ridden out within the same time: the states are read again,
        and none is yielded twice. A single JetStream call that times out is not the
        caller's whole wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        subject = subjects.backend_status(backend_id)
        seen: set[tuple[BackendState, datetime]] = set()
        while True:
            try:
                async for message in self._read_states(subject, deadline):
                    if (message.state, message.time) in seen:
                        continue
                    seen.add((message.state, message.time))
                    yield message
                    if message.state.terminal:
                        return
            except _JetStreamAway:
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.sleep(min(RETRY_PAUSE_SECS, left))
                continue
            break
        raise Timeout(f"no end of the states of backend {backend_id} within {timeout:g}s")

    async def _read_states(self, subject: str, deadline: float) -> AsyncIterator[Any]:
        """The stored states, then new ones, until `deadline` (then it just ends);
        `_JetStreamAway` when JetStream does not answer."""
        loop = asyncio.get_running_loop()
        try:
            sub = await self.nc.jetstream().subscribe(
                subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
        except nats.js.errors.NotFoundError:
            raise NotFound(f"no stream holds {subject} (is a controller running?)") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise _JetStreamAway(str(exc)) from None
        try:
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    return
                except nats.errors.Error as exc:
                    raise _JetStreamAway(str(exc)) from None
                with contextlib.suppress(wire.InvalidMessage):
                    yield wire.decode(BackendStateMessage, msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def wait_for_state(
        self, backend_id: str, state: BackendState = BackendState.READY, timeout: float = 120.0
    ) -> BackendStateMessage:
        """Wait until the backend reaches `state`; `BackendFailed` if it ends first."""
        try:
            async for message in self.follow_states(backend_id, timeout=timeout):
                if message.state == state:
                    return message
                if message.state.terminal or message.state.rank > state.rank:
                    raise BackendFailed(message)
        except Timeout:
            raise Timeout(
                f"backend {backend_id} did not reach {state.value} in {timeout:g}s"
            ) from None
        raise PlaneError(f"state stream of backend {backend_id} ended")

    async def logs(
        self, backend_id: str, *, follow: bool = False, timeout: float = 1.0
    ) -> AsyncIterator[DroneLogMessage]:
        """Stored log lines; with `follow`, then new ones as they come."""
        async for message in self._stream(
            subjects.backend_log(backend_id),
            DroneLogMessage,
            history=True,
            timeout=None if follow else timeout,
        ):
            yield message

    async def stats(self, backend_id: str) -> AsyncIterator[BackendStatsMessage]:
        """Resource use of a running backend, every 10 s as the drone publishes it."""
        sub = await self.nc.subscribe(subjects.backend_stats(backend_id))
        try:
            async for msg in sub.messages:
                try:
                    yield wire.decode(BackendStatsMessage, msg.data)
                except wire.InvalidMessage:
                    continue
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
