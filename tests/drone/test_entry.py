"""The `plane-drone` entry point's settings, and the readiness probe against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from drone.__main__ import main, settings_from
from drone.agent import probe


def test_flags_override_environment_override_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "drone.toml"
    config.write_text(
        'cluster = "file.test"\nip = "10.0.0.1"\n[docker]\nnetwork = "from-file"\n'
        "[agent]\nmax_backends = 5\n"
    )
    monkeypatch.setenv("PLANE_DOCKER_NETWORK", "from-env")
    monkeypatch.setenv("PLANE_PROXY_LISTEN", "0.0.0.0:8443")
    monkeypatch.setenv("PLANE_AGENT__READY_TIMEOUT_SECS", "7.5")
    monkeypatch.setenv("PLANE_DOCKER__EXTRA_LABELS", '{"team": "a"}')
    settings = settings_from(
        [
            "--config", str(config),
            "--cluster", "flag.test",
            "--nats", "nats://a:4222,nats://b:4222",
            "--metrics-listen", "off",
            "--state-dir", str(tmp_path / "s"),
        ]
    )  # fmt: skip
    assert settings.cluster == "flag.test"
    assert settings.ip == "10.0.0.1"
    assert settings.docker.network == "from-env"
    assert settings.docker.extra_labels == {"team": "a"}
    assert settings.proxy.listen == "0.0.0.0:8443"
    assert settings.agent.max_backends == 5
    assert settings.agent.ready_timeout_secs == 7.5
    assert settings.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.metrics_listen == "off"
    assert settings.state_dir == str(tmp_path / "s")


def test_unusable_settings_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "drone.toml"
    config.write_text("[agent]\nheartbeat_seconds = 4\n")
    assert main(["--config", str(config)]) == 2
    assert "unknown key `agent.heartbeat_seconds`" in capsys.readouterr().err
    assert main(["--ip", "nowhere"]) == 2
    assert "ip: 'nowhere' is not an IP address" in capsys.readouterr().err


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start TCP servers on free ports; returns each one's port."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


async def test_probe_wants_the_start_of_an_http_answer(serve: Serve) -> None:
    hold = asyncio.Event()

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-x\r\n")
        await writer.drain()
        writer.close()

    answering = await serve(answers)
    quiet = await serve(silent)
    other = await serve(not_http)
    try:
        assert await probe.answers_http("127.0.0.1", answering, timeout=5) is True
        assert await probe.answers_http("127.0.0.1", quiet, timeout=0.2) is False
        assert await probe.answers_http("127.0.0.1", other, timeout=5) is False
        await asyncio.wait_for(
            probe.wait_until_answering(
                "127.0.0.1", answering, attempt_timeout=1, max_interval=0.05
            ),
            5,
        )
    finally:
        hold.set()
