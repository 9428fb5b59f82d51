"""The files an operator installs from deploy/: they load, verify and parse as they are."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controller.config import ControllerSettings
from controller.metrics import ControllerMetrics
from drone.agent.metrics import AgentMetrics
from drone.config import DroneSettings, proxy_workers
from drone.proxy.metrics import ProxyMetrics
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


PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "plane-dashboard.json"
METRIC_NAME = re.compile(r"\b(plane_[a-z0-9_]+)")


def metric_names_used() -> set[str]:
    """Every metric the alert rules and the dashboard ask for."""
    rules = yaml_free_text(PROMETHEUS / "alerts.yml")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return set(METRIC_NAME.findall(rules + "\n".join(exprs)))


def yaml_free_text(path: Path) -> str:
    """The `expr:` parts of a rules file (enough to find metric names; no YAML parser)."""
    lines, keep = [], False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("expr:"):
            keep = True
            lines.append(stripped.removeprefix("expr:"))
        elif keep and line.startswith(" " * 12) and ":" not in stripped.split(" ")[0]:
            lines.append(stripped)
        else:
            keep = False
    return "\n".join(lines)


def served_metric_names() -> set[str]:
    registry = CollectorRegistry()
    AgentMetrics(registry)
    ProxyMetrics(registry)
    text = (
        generate_latest(registry).decode() + generate_latest(ControllerMetrics().registry).decode()
    )
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run `make tools` (prometheus)", pytrace=False)
    return subprocess.run(
        [binary, *argv], capture_output=True, text=True, check=False, cwd=PROMETHEUS
    )


def test_the_alert_rules_check_and_pass_their_unit_tests() -> None:
    for argv in (("check", "rules", "alerts.yml"), ("test", "rules", "alerts_test.yml")):
        result = promtool(*argv)
        assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    names = {r.split(":")[1].strip() for r in (PROMETHEUS / "alerts.yml").read_text().splitlines()
             if r.strip().startswith("- alert:")}  # fmt: skip
    assert names == {
        "PlaneDroneLost",
        "PlaneNoDroneAvailable",
        "PlaneSpawnFailures",
        "PlaneProxy5xxRatio",
        "PlaneNatsDisconnected",
        "PlaneScheduleLatencyP99",
    }


def test_every_metric_the_rules_and_the_dashboard_use_is_served() -> None:
    used = metric_names_used()
    assert len(used) >= 15
    assert used <= served_metric_names(), used - served_metric_names()
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "plane-cluster"
    assert all(p["type"] in ("row", "timeseries") for p in dashboard["panels"])
