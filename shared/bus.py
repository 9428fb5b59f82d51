"""Typed NATS helpers used by every process: connect, request, serve, streams.

Library errors are translated here into `BusError` subclasses, so callers
never import nats-py exception types. Serving loops never die on bad input: a
payload that fails to decode is answered with an error reply naming the field,
and a request without a reply subject is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig

from shared import credentials, protocol, wire

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Rep = TypeVar("Rep")

__all__ = ["Msg", "NatsClient", "Subscription"]


class NatsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to reach NATS: servers, credentials and TLS."""

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    token: str | None = None
    user: str | None = None
    password: str | None = None
    credentials_file: str | None = None  # `plane auth` credentials, or a NATS JWT .creds file
    nkey_seed_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    connect_timeout_secs: float = 5.0
    reconnect_wait_secs: float = 1.0


class BusError(Exception):
    """A NATS operation that did not complete."""


class RequestTimeout(BusError):
    pass


class NoResponders(BusError):
    pass


class BusUnavailable(BusError):
    pass


class BadReply(BusError):
    pass


def _tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    wants_tls = (
        settings.tls_ca_file
        or settings.tls_cert_file
        or any(s.startswith("tls://") for s in settings.servers)
    )
    if not wants_tls:
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca_file)
    if settings.tls_cert_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


Hook = Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


async def connect(
    settings: NatsSettings,
    *,
    name: str,
    wait_forever: bool = True,
    on_reconnect: Hook = _noop,
    on_disconnect: Hook = _noop,
) -> NatsClient:
    """Connect, then stay connected: reconnects never give up.

    With `wait_forever` the first connection is retried every
    `reconnect_wait_secs` too (daemons may start before NATS); otherwise a
    server that refuses twice raises `BusUnavailable` (the CLI says so at once).
    """
    options: dict[str, Any] = {
        **_credentials_options(settings),
        "servers": settings.servers,
        "name": name,
        "connect_timeout": settings.connect_timeout_secs,
        "reconnect_time_wait": settings.reconnect_wait_secs,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "pending_size": 16 * 1024 * 1024,
        "tls": _tls_context(settings),
        "token": settings.token,
        "user": settings.user,
        "password": settings.password,
        "nkeys_seed": settings.nkey_seed_file,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }
    options.update(_url_credentials(settings))
    errors = _ErrorLog(quiet=not wait_forever)
    options["error_cb"] = errors.report
    if not wait_forever:
        # Two tries per server, then give up: a person is waiting for an answer.
        options["max_reconnect_attempts"] = 1
        options["reconnect_time_wait"] = 0.1
    nc = NatsClient()
    try:
        await asyncio.wait_for(
            nc.connect(**{k: v for k, v in options.items() if v is not None}),
            None if wait_forever else settings.connect_timeout_secs + 1,
        )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        reason = errors.last or _describe(exc)
        raise BusUnavailable(
            f"cannot reach NATS at {','.join(settings.servers)}: {reason}"
        ) from None
    # Connected: from now on, ride out server restarts.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = settings.reconnect_wait_secs
    return nc


def _url_credentials(settings: NatsSettings) -> dict[str, Any]:
    """`nats://user:pass@host` (or `nats://token@host`) as connection-wide options.

    nats-py uses a URL's credentials for that server only; the servers it
    discovers from the cluster would be tried without them, so a daemon given
    one URL could never fail over. Settings given on their own win.
    """
    if settings.user is not None or settings.token is not None:
        return {}
    for server in settings.servers:
        parsed = urllib.parse.urlsplit(server if "://" in server else f"nats://{server}")
        if parsed.username is None:
            continue
        user = urllib.parse.unquote(parsed.username)
        if parsed.password is None:
            return {"token": user}
        return {"user": user, "password": urllib.parse.unquote(parsed.password)}
    return {}


def _credentials_options(settings: NatsSettings) -> dict[str, Any]:
    """nats-py's options for `credentials_file`: a Plane NKey file (seed, and the reply
    inbox its role may use) or a NATS JWT credentials file."""
    if settings.credentials_file is None:
        return {}
    try:
        found = credentials.read(settings.credentials_file)
    except credentials.CredentialsError as exc:
        raise BusUnavailable(str(exc)) from None
    if found.is_jwt:
        return {"user_credentials": settings.credentials_file}
    options: dict[str, Any] = {"nkeys_seed_str": found.seed}
    if found.inbox:
        options["inbox_prefix"] = found.inbox
    return options


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _ErrorLog:
    """Logs NATS connection errors, each distinct one at most every 30 s."""

    def __init__(self, quiet: bool = False) -> None:
        self._seen: dict[str, float] = {}
        self.quiet = quiet
        self.last: str | None = None

    async def report(self, exc: Exception) -> None:
        text = self.last = _describe(exc)
        now = time.monotonic()
        if self.quiet:
            return
        if now - self._seen.get(text, -1e9) >= 30:
            self._seen[text] = now
            log.warning("NATS: %s", text)


@overload
async def request(
    nc: NatsClient, subject: str, message: Any, reply_type: type[Rep], *, timeout: float = 5.0
) -> Rep: ...
@overload
async def request(
    nc: NatsClient, subject: str, message: Any, reply_type: Any, *, timeout: float = 5.0
) -> Any: ...


async def request(
    nc: NatsClient,
    subject: str,
    message: Any,
    reply_type: Any,
    *,
    timeout: float = 5.0,
) -> Any:
    """Send one request and decode its reply as `reply_type`."""
    payload = message if isinstance(message, bytes) else wire.encode(message)
    try:
        reply = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise NoResponders(f"no one serves {subject}") from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise RequestTimeout(f"no reply on {subject} within {timeout:g}s") from None
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
        raise BusUnavailable(f"NATS connection unavailable: {type(exc).__name__}") from None
    try:
        return wire.decode(reply_type, reply.data)
    except wire.InvalidMessage as exc:
        raise BadReply(f"bad reply on {subject}: {exc}") from None


async def settle(nc: NatsClient, timeout: float) -> None:
    """Wait until the server has our subscriptions, so requests sent next find them.

    Flushes twice: nats-py writes a flush's PING straight to the socket, ahead of
    commands still queued for its writer task, so the first PONG may come back
    before our SUBs were sent; the second PING follows them. NATS being away is
    logged, not raised: subscriptions are sent again on reconnect.
    """
    try:
        for _ in range(2):
            await nc.flush(timeout=max(1, math.ceil(timeout)))
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("NATS flush after subscribing: %s", exc)


async def publish(nc: NatsClient, subject: str, message: Any) -> None:
    await nc.publish(subject, wire.encode(message))


Handler = Callable[[Req, str], Awaitable[Any]]


def invalid_reply(message: str) -> Any:
    return protocol.invalid_request(message)


class Endpoint(Generic[Req]):
    """A typed subscription: decodes each message, runs the handler, replies.

    Handlers run as tasks when `concurrent` (so one slow request never holds up
    the next); `stop` unsubscribes and lets the tasks in flight finish.
    """

    def __init__(
        self,
        nc: NatsClient,
        subject: str,
        kind: type[Req] | Any,
        handler: Handler[Req],
        *,
        queue: str = "",
        replies: bool = True,
        concurrent: bool = True,
        error_reply: Callable[[str], Any] = invalid_reply,
    ) -> None:
        self._nc = nc
        self.subject = subject
        self._kind = kind
        self._handler = handler
        self._queue = queue
        self._replies = replies
        self._concurrent = concurrent
        self._error_reply = error_reply
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None

    async def start(self) -> Endpoint[Req]:
        self._sub = await self._nc.subscribe(
            self.subject, queue=self._queue, cb=self._on_message, pending_msgs_limit=-1
        )
        return self

    async def _on_message(self, msg: Msg) -> None:
        if self._concurrent:
            task = asyncio.create_task(self._handle(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        if self._replies and not msg.reply:
            log.warning("request on %s has no reply subject; dropped", msg.subject)
            return
        try:
            request: Req = wire.decode(self._kind, msg.data)
        except wire.InvalidMessage as exc:
            log.info("invalid message on %s: %s", msg.subject, exc)
            await self._reply(msg, self._error_reply(str(exc)))
            return
        try:
            result = await self._handler(request, msg.subject)
        except Exception as exc:
            log.exception("handler for %s failed", msg.subject)
            await self._reply(msg, self._error_reply(f"internal error: {type(exc).__name__}"))
            return
        await self._reply(msg, result)

    async def _reply(self, msg: Msg, value: Any) -> None:
        if not (self._replies and msg.reply):
            return
        try:
            await self._nc.publish(msg.reply, wire.encode(value))
        except Exception as exc:  # the requester may be gone, or NATS down
            log.warning("reply on %s not sent: %s", msg.subject, exc)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def stop(self, timeout: float = 10.0) -> None:
        if self._sub is not None:
            try:  # drain: requests the server already sent us are still answered
                async with asyncio.timeout(timeout):
                    await self._sub.drain()  # type: ignore[no-untyped-call]
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("drain %s: %s", self.subject, exc)
            self._sub = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


async def serve(
    nc: NatsClient,
    subject: str,
    kind: type[Req] | Any,
    handler: Handler[Req],
    *,
    queue: str = "",
    replies: bool = True,
    concurrent: bool = True,
    error_reply: Callable[[str], Any] = invalid_reply,
) -> Endpoint[Req]:
    """Subscribe `handler` to `subject`; see `Endpoint`."""
    endpoint = Endpoint(
        nc,
        subject,
        kind,
        handler,
        queue=queue,
        replies=replies,
        concurrent=concurrent,
        error_reply=error_reply,
    )
    return await endpoint.start()


async def ensure_stream(
    nc: NatsClient,
    name: str,
    subjects: list[str],
    *,
    max_msgs_per_subject: int = -1,
    max_age_secs: float = 0,
    max_bytes: int = -1,
    replicas: int = 1,
) -> int:
    """Create a JetStream stream, or bring an existing one to this configuration; returns
    its replica count.

    An existing stream never gets fewer replicas than it has: an operator who
    raised them (`nats stream edit --replicas 3`) keeps them through every restart.
    """
    js = nc.jetstream()
    config = StreamConfig(
        name=name,
        subjects=subjects,
        max_msgs_per_subject=max_msgs_per_subject,
        max_age=max_age_secs,
        max_bytes=max_bytes,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
        return replicas
    except nats.js.errors.BadRequestError:
        pass
    existing = (await js.stream_info(name)).config.num_replicas or 1
    config.num_replicas = max(existing, replicas)
    await js.update_stream(config)
    return config.num_replicas


def cluster_size(nc: NatsClient) -> int:
    """How many servers the client knows: those given plus those the cluster told it of."""
    return max(1, len({(uri.hostname, uri.port) for uri in nc.servers}))
