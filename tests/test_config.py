"""Settings from TOML, `PLANE_*` environment and flags, in that order of precedence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from shared import config
from shared.bus import NatsSettings


class Dns(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str | None = None
    ttl_secs: int = 60


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    clusters: list[str] = []
    metrics_listen: str = "127.0.0.1:9101"
    heartbeat_grace_secs: float = 12.0
    dns: Dns = msgspec.field(default_factory=Dns)


ALIASES = {"nats": ("nats", "servers")}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plane.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    settings = config.load(Settings, environ={})
    assert settings.nats.servers == ["nats://127.0.0.1:4222"]
    assert settings.dns.ttl_secs == 60


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        metrics_listen = "0.0.0.0:9000"
        heartbeat_grace_secs = 20
        clusters = ["a.dev"]
        [nats]
        servers = ["nats://file:4222"]
        token = "from-file"
        [dns]
        ttl_secs = 30
        """,
    )
    environ = {
        "PLANE_NATS": "nats://env1:4222, nats://env2:4222",
        "PLANE_NATS__TOKEN": "from-env",
        "PLANE_HEARTBEAT_GRACE_SECS": "15.5",
        "PLANE_DNS__TTL_SECS": "10",
        "PLANE_IP": "10.0.0.1",  # another process's setting: ignored here
        "HOME": "/root",
    }
    settings = config.load(
        Settings,
        path=path,
        environ=environ,
        flags={"metrics_listen": "127.0.0.1:1", "clusters": None},
        aliases=ALIASES,
    )
    assert settings.nats.servers == ["nats://env1:4222", "nats://env2:4222"]
    assert settings.nats.token == "from-env"
    assert settings.heartbeat_grace_secs == 15.5
    assert settings.dns.ttl_secs == 10
    assert settings.metrics_listen == "127.0.0.1:1"
    assert settings.clusters == ["a.dev"]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'metrics_listen = "1.2.3.4:5"\n')
    settings = config.load(Settings, environ={"PLANE_CONFIG": str(path)})
    assert settings.metrics_listen == "1.2.3.4:5"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[nats]\nserverz = []\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(Settings, path=path, environ={})
    assert "nats.serverz" in str(caught.value)
    assert str(path) in str(caught.value)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[dns]\nttl_secs = "soon"\n')
    with pytest.raises(config.ConfigError) as caught:
        config.load(Settings, path=path, environ={})
    assert "dns.ttl_secs" in str(caught.value) and str(path) in str(caught.value)


def test_bad_env_value_is_reported() -> None:
    with pytest.raises(config.ConfigError, match="heartbeat_grace_secs"):
        config.load(Settings, environ={"PLANE_HEARTBEAT_GRACE_SECS": "often"})


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(Settings, path=tmp_path / "nope.toml", environ={})
    with pytest.raises(config.ConfigError, match=r"plane\.toml"):
        config.load(Settings, path=write(tmp_path, "this is [not toml"), environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        (":9090", ("127.0.0.1", 9090)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:53", ("::1", 53)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert config.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["localhost", "host:port", "h:70000", ""])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(config.ConfigError):
        config.parse_listen(text)


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("plane", ["--nats", "--cluster"]),
        ("plane-controller", ["--nats", "--metrics-listen", "--dns-listen", "--config"]),
        (
            "plane-drone",
            [
                "--nats",
                "--cluster",
                "--ip",
                "--proxy-listen",
                "--metrics-listen",
                "--state-dir",
                "--docker-network",
                "--config",
            ],
        ),
    ],
)
def test_console_scripts_list_their_options(script: str, flags: list[str]) -> None:
    exe = Path(sys.executable).parent / script
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for flag in flags:
        assert flag in result.stdout


def test_reference_names_every_key_with_its_default_and_environment_variable() -> None:
    lines = config.reference(Settings)
    assert 'metrics_listen = "127.0.0.1:9101"  (PLANE_METRICS_LISTEN)' in lines
    assert "dns.ttl_secs = 60  (PLANE_DNS__TTL_SECS)" in lines
    assert "dns.listen = unset  (PLANE_DNS__LISTEN)" in lines
    assert "clusters = []  (PLANE_CLUSTERS)" in lines


@pytest.mark.parametrize(
    "cls_path", ["controller.config:ControllerSettings", "drone.config:DroneSettings"]
)
def test_every_listed_numeric_setting_is_read_from_its_environment_variable(cls_path: str) -> None:
    module, name = cls_path.split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    checked = 0
    for line in config.reference(cls):
        key, rest = line.split(" = ", 1)
        default, env = rest.rsplit("  (", 1)
        if not default.replace(".", "", 1).isdigit():
            continue
        value = "7" if default != "7" else "8"
        loaded = config.load(cls, environ={env.rstrip(")"): value})
        for part in key.split("."):
            loaded = getattr(loaded, part)
        assert loaded == int(value), key
        checked += 1
    assert checked > 10
