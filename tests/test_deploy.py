"""The files an operator installs from deploy/: they load, verify and parse as they are."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.config import ControllerSettings
from drone.config import DroneSettings, proxy_workers
from shared import authconf, config
from tests.support.tlsca import CertAuthority

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: run `make tools` (systemd)", pytrace=False)
    assert {u.name for u in UNITS} == {
        "plane-controller.service",
        "plane-drone.service",
        "nats-server.service",
    }
    copies = []
    for unit in UNITS:
        # The programs where this machine has them; everything else as shipped.
        text = unit.read_text().replace("/opt/plane/bin/", f"{BIN}/")
        text = text.replace("/usr/local/bin/nats-server", str(BIN / "nats-server"))
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(str(copy))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_are_hardened_and_restart(unit: Path) -> None:
    text = unit.read_text()
    for line in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "Restart=always",
        "User=",
    ):
        assert line in text, f"{unit.name}: {line}"
    if unit.name == "plane-drone.service":
        assert "SupplementaryGroups=docker" in text
        assert "ReadWritePaths=/var/lib/plane" in text
        assert "EnvironmentFile=-/etc/plane/drone.env" in text


def test_the_example_settings_load_as_written() -> None:
    controller = config.load(
        ControllerSettings, path=DEPLOY / "config" / "controller.toml", environ={}
    )
    assert controller.clusters == ["plane.example.com"]
    assert controller.nats.credentials_file == "/etc/plane/controller.creds"
    drone = config.load(
        DroneSettings,
        path=DEPLOY / "config" / "drone.toml",
        environ={"PLANE_IP": "203.0.113.7"},
        aliases={},
    )
    assert (drone.ip, drone.state_dir, drone.proxy.listen) == (
        "203.0.113.7",
        "/var/lib/plane",
        "0.0.0.0:443",
    )
    assert proxy_workers(drone.proxy) >= 1
    env = (DEPLOY / "config" / "drone.env").read_text()
    assert "PLANE_IP=" in env


def test_the_example_nats_config_is_one_nats_server_takes(tmp_path: Path) -> None:
    ca = CertAuthority.create(tmp_path / "tls")
    server = ca.issue("server", "127.0.0.1")
    authconf.init(tmp_path / "plane", "plane.example.com")
    text = (DEPLOY / "nats" / "nats-server.conf").read_text()
    text = text.replace("/etc/nats/tls/server.pem", str(server.cert))
    text = text.replace("/etc/nats/tls/server-key.pem", str(server.key))
    text = text.replace("/etc/nats/tls/ca.pem", str(ca.cert))
    text = text.replace("/var/lib/nats/jetstream", str(tmp_path / "js"))
    conf = tmp_path / "nats-server.conf"
    conf.write_text(text)
    result = subprocess.run(
        [str(BIN / "nats-server"), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
