"""The drone's only door to Docker: aiodocker calls with timeouts and our own errors.

Every call is bounded by `api_timeout_secs` (a pull by `pull_timeout_secs`);
aiodocker and aiohttp errors become `DockerUnavailable` (the engine cannot be
reached or does not answer in time), `NotFound`, `Conflict` or `DockerFailure`
(the engine refused), so callers never import aiodocker. Each failure is also
handed to `on_error`, which counts it and notices an engine that went away.
Streams (events, logs) are the exception to per-call timeouts: they stay open
for a container's life and end when it does or when the caller cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiodocker
import aiohttp

from drone.agent import imagegc
from drone.config import DockerSettings
from shared.protocol import DockerCredentials, LogKind

log = logging.getLogger(__name__)

T = TypeVar("T")

NEVER_STARTED = "0001-01-01T00:00:00Z"


class DockerRuntimeError(Exception):
    """A Docker operation that did not complete."""


class DockerUnavailable(DockerRuntimeError):
    """The engine cannot be reached or did not answer in time."""


class NotFound(DockerRuntimeError):
    pass


class Conflict(DockerRuntimeError):
    pass


class DockerFailure(DockerRuntimeError):
    """The engine answered with an error (bad image, refused configuration, ...)."""


ErrorHook = Callable[[str, DockerRuntimeError], None]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the drone needs from an inspect or a listing."""

    id: str
    name: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None  # None while running
    ever_started: bool
    ip: str | None


@dataclass(frozen=True, slots=True)
class ExitEvent:
    container_id: str
    labels: Mapping[str, str]
    exit_code: int


@dataclass(frozen=True, slots=True)
class StreamRestarted:
    """The events stream was (re)opened: exits in between may have been missed."""


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One `docker stats` reading, reduced to what BackendStatsMessage needs."""

    cpu_total_ns: int
    cpu_prev_total_ns: int
    system_ns: int
    system_prev_ns: int
    memory_used_bytes: int
    memory_limit_bytes: int


def translate_error(operation: str, exc: BaseException) -> DockerRuntimeError:
    if isinstance(exc, aiodocker.DockerError):
        text = f"{operation}: {exc.message}"
        if exc.status == 404:
            return NotFound(text)
        if exc.status == 409:
            return Conflict(text)
        if exc.status >= 900 or exc.status == 502 or exc.status == 503:
            return DockerUnavailable(text)
        return DockerFailure(text)
    if isinstance(exc, TimeoutError):
        return DockerUnavailable(f"{operation}: the engine did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return DockerUnavailable(f"{operation}: {type(exc).__name__}: {exc}")
    # A URL that cannot be built, a malformed answer: about this call, not the engine.
    return DockerFailure(f"{operation}: {type(exc).__name__}: {exc}")


_TRANSLATED = (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


def docker_url(socket: str | None) -> str | None:
    """A socket path or URL from settings as aiodocker wants it (None: its default)."""
    if socket is None:
        return None
    if socket.startswith("/"):
        return f"unix://{socket}"
    return socket


def registry_qualified(image: str) -> str:
    """`ubuntu` → `docker.io/library/ubuntu`, so credentials name their registry."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"


def uncapped_client(
    like: aiodocker.Docker, url: str | None
) -> tuple[aiodocker.Docker, aiohttp.BaseConnector | None]:
    """A client for the same engine as `like` (made from `url`) with no cap on its pool.

    Unix sockets and plain TCP get their own uncapped connector, returned too
    because the caller must close it; other transports (TLS, SSH) are made
    from `url` again, with aiodocker's defaults.
    """
    connector: aiohttp.BaseConnector
    if isinstance(like.connector, aiohttp.UnixConnector):
        connector = aiohttp.UnixConnector(like.connector.path, limit=0)
        return aiodocker.Docker(url="unix://localhost", connector=connector), connector
    if like.docker_host.startswith(("tcp://", "http://")):
        connector = aiohttp.TCPConnector(limit=0)
        http = "http://" + like.docker_host.split("://", 1)[1]
        return aiodocker.Docker(url=http, connector=connector), connector
    return aiodocker.Docker(url=url), None


def _field(found: Any, key: str) -> Any:
    """A field of an inspect dict or a listed container (which is not a Mapping)."""
    try:
        return found[key]
    except KeyError:
        return None


def _ip_of(info: Any, network: str | None) -> str | None:
    """The container's address on `network` (else on any network) from an inspect or listing."""
    networks: Mapping[str, Any] = (_field(info, "NetworkSettings") or {}).get("Networks") or {}
    if network is not None and network in networks:
        return networks[network].get("IPAddress") or None
    for entry in networks.values():
        if entry.get("IPAddress"):
            return str(entry["IPAddress"])
    return None


class _SharedPull:
    """One pull that several backends wait for; cancelled when the last one stops waiting."""

    def __init__(self, task: asyncio.Future[None]) -> None:
        self.task = task
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        try:
            await asyncio.shield(self.task)
        finally:
            self.waiting -= 1
            if self.waiting == 0 and not self.task.done():
                self.task.cancel()


class DockerRuntime:
    def __init__(self, settings: DockerSettings, on_error: ErrorHook | None = None) -> None:
        self.settings = settings
        self._on_error = on_error
        self._client: aiodocker.Docker | None = None
        self._streams: aiodocker.Docker | None = None
        self._streams_connector: aiohttp.BaseConnector | None = None
        self._pulls_client: aiodocker.Docker | None = None
        self._pulls_connector: aiohttp.BaseConnector | None = None
        self._pull_slots = asyncio.Semaphore(max(1, settings.max_concurrent_pulls))
        self._pulls: dict[tuple[str, tuple[str, str] | None], _SharedPull] = {}

    @property
    def client(self) -> aiodocker.Docker:
        """For short calls: its pool's cap keeps a burst of spawns from flooding the engine."""
        if self._client is None:
            self._client = aiodocker.Docker(url=docker_url(self.settings.socket))
        return self._client

    @property
    def streams(self) -> aiodocker.Docker:
        """For events, output and stats: one connection each, held long, never capped.

        With aiohttp's default cap of 100 connections, a hundred followed
        outputs would leave no connection for creating the next backend.
        """
        if self._streams is None:
            url = docker_url(self.settings.socket)
            self._streams, self._streams_connector = uncapped_client(self.client, url)
        return self._streams

    @property
    def pulls(self) -> aiodocker.Docker:
        """For pulls alone: their own connections, so a hanging pull holds no other call."""
        if self._pulls_client is None:
            url = docker_url(self.settings.socket)
            self._pulls_client, self._pulls_connector = uncapped_client(self.client, url)
        return self._pulls_client

    async def close(self) -> None:
        for pull in list(self._pulls.values()):
            pull.task.cancel()
        for client in (self._pulls_client, self._streams, self._client):
            if client is not None:
                with contextlib.suppress(*_TRANSLATED):
                    async with asyncio.timeout(5):
                        await client.close()
        for connector in (self._pulls_connector, self._streams_connector):
            if connector is not None:
                await connector.close()
        self._client = self._streams = self._streams_connector = None
        self._pulls_client = self._pulls_connector = None

    async def _call(
        self, operation: str, work: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        limit = timeout or self.settings.api_timeout_secs
        try:
            async with asyncio.timeout(limit):
                return await work()
        except TimeoutError:
            # A slow registry makes a slow pull; only other calls say the engine hangs.
            kind = DockerFailure if operation == "pull" else DockerUnavailable
            error: DockerRuntimeError = kind(f"{operation}: no answer within {limit:g}s")
        except _TRANSLATED as exc:
            error = translate_error(operation, exc)
        if self._on_error is not None and not isinstance(error, NotFound):
            self._on_error(operation, error)
        raise error

    # --- engine ----------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("ping", self.client.version)

    async def host_memory_bytes(self) -> int:
        info = await self._call("info", self.client.system.info)
        return int(info.get("MemTotal") or 0)

    # --- images ----------------------------------------------------------------

    async def images(self) -> list[imagegc.Image]:
        found = await self._call("image list", lambda: self.client.images.list())
        return [
            imagegc.Image(
                id=str(item["Id"]),
                size=int(item.get("Size") or 0),
                created=float(item.get("Created") or 0),
                tags=tuple(item.get("RepoTags") or ()),
            )
            for item in found
        ]

    async def images_in_use(self) -> frozenset[str]:
        """The image of every container of the engine, running or not (any owner's)."""
        found = await self._call("list", lambda: self.client.containers.list(all=True))
        return frozenset(str(_field(container, "ImageID")) for container in found)

    async def remove_image(self, image_id: str) -> None:
        """Remove an image (never forced: one a container has begun to use stays)."""
        await self._call("image remove", lambda: self.client.images.delete(image_id))

    async def disk(self, path: str | None) -> imagegc.Disk:
        """Use of the filesystem at `path`, by default the engine's own root directory."""
        if path is None:
            info = await self._call("info", self.client.system.info)
            path = str(info.get("DockerRootDir") or "/var/lib/docker")
        try:
            found = await asyncio.to_thread(os.statvfs, path)
        except OSError as exc:
            raise DockerFailure(f"disk use of {path}: {exc}") from None
        total = found.f_blocks * found.f_frsize
        return imagegc.Disk(used_bytes=total - found.f_bavail * found.f_frsize, total_bytes=total)

    async def image_present(self, image: str) -> bool:
        try:
            await self._call("image inspect", lambda: self.client.images.inspect(image))
        except NotFound:
            return False
        return True

    async def pull(self, image: str, credentials: DockerCredentials | None) -> None:
        """Pull, sharing one pull among the backends that want the same image.

        Pulls go through their own connections, at most `max_concurrent_pulls`
        at once: a registry that never answers (a hostile image name, say) ties
        up pulls only, never the calls that create, start and watch backends.
        """
        auth: dict[str, str] | None = None
        source = image
        if credentials is not None and credentials.UsernamePassword is not None:
            pair = credentials.UsernamePassword
            auth = {"username": pair.username, "password": pair.password}
            source = registry_qualified(image)
        key = (source, None if auth is None else (auth["username"], auth["password"]))
        shared = self._pulls.get(key)
        if shared is None:
            shared = self._pulls[key] = _SharedPull(asyncio.ensure_future(self._pull(source, auth)))
            shared.task.add_done_callback(lambda _: self._pulls.pop(key, None))
        await shared.wait()

    async def _pull(self, source: str, auth: dict[str, str] | None) -> None:
        async with self._pull_slots:
            # Docker normalises names, so `ubuntu` and `docker.io/library/ubuntu` are one image.
            await self._call(
                "pull",
                lambda: self.pulls.images.pull(source, auth=auth),
                self.settings.pull_timeout_secs,
            )

    # --- containers ---------------------------------------------------------------

    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        container = await self._call(
            "create", lambda: self.client.containers.create(dict(config), name=name)
        )
        return container.id

    async def start(self, container_id: str) -> None:
        await self._call("start", self.client.containers.container(container_id).start)

    async def inspect(self, name_or_id: str) -> ContainerInfo:
        data = await self._call(
            "inspect", lambda: self.client.containers.container(name_or_id).show()
        )
        state = data.get("State") or {}
        running = bool(state.get("Running"))
        return ContainerInfo(
            id=str(data["Id"]),
            name=str(data.get("Name", "")).lstrip("/"),
            labels=(data.get("Config") or {}).get("Labels") or {},
            running=running,
            exit_code=None if running else int(state.get("ExitCode") or 0),
            ever_started=state.get("StartedAt", NEVER_STARTED) != NEVER_STARTED,
            ip=_ip_of(data, self.settings.network),
        )

    async def list_labelled(self, label: str, value: str) -> list[ContainerInfo]:
        """Every container (running or not) with `label=value`.

        One listing call; only containers that are not running are inspected
        too, for their exit status.
        """
        found = await self._call(
            "list",
            lambda: self.client.containers.list(all=True, filters={"label": [f"{label}={value}"]}),
        )
        result = []
        for container in found:
            state = _field(container, "State")
            if state == "running":
                result.append(
                    ContainerInfo(
                        id=container.id,
                        name=(_field(container, "Names") or [""])[0].lstrip("/"),
                        labels=_field(container, "Labels") or {},
                        running=True,
                        exit_code=None,
                        ever_started=True,
                        ip=_ip_of(container, self.settings.network),
                    )
                )
                continue
            try:
                result.append(await self.inspect(container.id))
            except NotFound:
                continue  # removed in between
        return result

    async def stop_and_remove(self, name_or_id: str, stop_timeout: int) -> None:
        """Stop (SIGTERM, then SIGKILL after `stop_timeout`) and remove with its volumes."""
        container = self.client.containers.container(name_or_id)
        with contextlib.suppress(NotFound):
            await self._call(
                "stop",
                lambda: container.stop(t=stop_timeout),
                self.settings.api_timeout_secs + stop_timeout,
            )
        with contextlib.suppress(NotFound):
            await self._call("remove", lambda: container.delete(force=True, v=True))

    async def stats(self, container_id: str) -> StatsSample:
        container = self.streams.containers.container(container_id)
        readings = await self._call("stats", lambda: container.stats(stream=False))
        if not readings:
            raise DockerFailure("stats: no reading")
        return _sample(readings[0])

    # --- streams -------------------------------------------------------------------

    async def exits(self, label: str, value: str) -> AsyncIterator[ExitEvent | StreamRestarted]:
        """Exit events of containers with `label=value`, forever.

        The stream is reopened whenever it breaks (after `check_secs`); each
        opening yields `StreamRestarted` first, so the caller can look for
        exits that happened while nobody was listening.
        """
        filters = {"type": ["container"], "event": ["die"], "label": [f"{label}={value}"]}
        while True:
            events = self.streams.events
            subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
            reader = asyncio.create_task(events.run(filters=filters))
            try:
                yield StreamRestarted()
                while True:
                    event = await subscriber.get()
                    if event is None:
                        break
                    exit_event = _exit_event(event)
                    if exit_event is not None:
                        yield exit_event
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, *_TRANSLATED):
                    await reader
                with contextlib.suppress(*_TRANSLATED):
                    async with asyncio.timeout(5):
                        await events.stop()  # type: ignore[no-untyped-call]
            if not reader.cancelled() and reader.exception() is not None:
                error = translate_error("events", reader.exception() or RuntimeError())
                if self._on_error is not None:
                    self._on_error("events", error)
                log.debug("Docker events stream broke (%s); reopening", error)
            await asyncio.sleep(self.settings.check_secs)

    async def output(
        self, container_id: str, kind: LogKind, since: float | None = None
    ) -> AsyncIterator[str]:
        """Follow one of a container's output streams until it exits."""
        container = self.streams.containers.container(container_id)
        options: dict[str, Any] = {}
        if since is not None:
            options["since"] = int(since)
        try:
            stream = container.log(
                stdout=kind is LogKind.STDOUT,
                stderr=kind is LogKind.STDERR,
                follow=True,
                **options,
            )
            async for chunk in stream:
                yield chunk
        except _TRANSLATED as exc:
            raise translate_error("logs", exc) from None


def _exit_event(event: Mapping[str, Any]) -> ExitEvent | None:
    actor = event.get("Actor") or {}
    attributes: Mapping[str, str] = actor.get("Attributes") or {}
    container_id = actor.get("ID") or event.get("id")
    if not container_id:
        return None
    try:
        code = int(attributes.get("exitCode", "0"))
    except ValueError:
        code = -1
    return ExitEvent(str(container_id), attributes, code)


def _sample(reading: Mapping[str, Any]) -> StatsSample:
    cpu = reading.get("cpu_stats") or {}
    precpu = reading.get("precpu_stats") or {}
    memory = reading.get("memory_stats") or {}
    details = memory.get("stats") or {}
    # Page cache is reclaimable: count it out, as `docker stats` does
    # (`cache` under cgroup v1, `inactive_file` under v2).
    cache = details.get("cache", details.get("inactive_file", 0))
    used = max(0, int(memory.get("usage") or 0) - int(cache or 0))
    return StatsSample(
        cpu_total_ns=int((cpu.get("cpu_usage") or {}).get("total_usage") or 0),
        cpu_prev_total_ns=int((precpu.get("cpu_usage") or {}).get("total_usage") or 0),
        system_ns=int(cpu.get("system_cpu_usage") or 0),
        system_prev_ns=int(precpu.get("system_cpu_usage") or 0),
        memory_used_bytes=used,
        memory_limit_bytes=int(memory.get("limit") or 0),
    )
