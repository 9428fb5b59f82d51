"""The Prometheus endpoint: parses as exposition text and counts what happened."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from controller.metrics import ControllerMetrics
from controller.service import Controller
from shared import bus, subjects
from shared.protocol import Executable, ScheduleRequest
from tests.controller.conftest import CLUSTER, MakeDrone
from tests.controller.sim import eventually, wait_drones_ready
from tests.controller.test_dns import dig


async def scrape(controller: Controller) -> dict[str, list[Sample]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{controller.metrics_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: list(f.samples) for f in text_string_to_metric_families(response.text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matching) == 1, (name, labels, samples)
    return matching[0]


async def test_metrics_parse_and_count_schedules_drones_and_dns(
    nc: bus.NatsClient, controller: Controller, make_drone: MakeDrone
) -> None:
    drone = await make_drone()
    await wait_drones_ready(nc, CLUSTER, drone)
    request = ScheduleRequest(cluster=CLUSTER, executable=Executable(image="i"))
    for _ in range(3):
        await bus.request(nc, subjects.schedule(CLUSTER), request, Any, timeout=5)
    await nc.request(subjects.schedule(CLUSTER), b"{}", timeout=5)
    assert controller.dns_port is not None
    await dig(controller.dns_port, CLUSTER, "SOA")
    await dig(controller.dns_port, "example.com", "A", tcp=True)

    async def gauges_set() -> bool:
        families = await scrape(controller)
        drones = families["plane_controller_drones"]
        return value(drones, "plane_controller_drones", state="Ready") == 1

    await eventually(gauges_set, what="the drone gauge to count the drone")
    families = await scrape(controller)

    requests = families["plane_controller_schedule_requests"]
    total = "plane_controller_schedule_requests_total"
    assert value(requests, total, outcome="scheduled") == 3
    assert value(requests, total, outcome="invalid") == 1
    assert value(requests, total, outcome="no_drone") == 0
    latency = families["plane_controller_schedule_duration_seconds"]
    # Timed from a decoded request to its answer: the undecodable one is not timed.
    assert value(latency, "plane_controller_schedule_duration_seconds_count") == 3
    spawns = families["plane_controller_spawn_attempts"]
    assert value(spawns, "plane_controller_spawn_attempts_total", outcome="accepted") == 3
    backends = families["plane_controller_backends"]
    assert value(backends, "plane_controller_backends", state="Loading") == 3
    dns = families["plane_controller_dns_queries"]
    assert value(dns, "plane_controller_dns_queries_total", result="answer", transport="udp") == 1
    assert value(dns, "plane_controller_dns_queries_total", result="refused", transport="tcp") == 1
    reconnects = families["plane_controller_nats_reconnects"]
    assert value(reconnects, "plane_controller_nats_reconnects_total") == 0
    # Base units and bounded labels only: no IDs anywhere in the label values.
    for samples in families.values():
        for sample in samples:
            assert drone.drone_id not in sample.labels.values()


def test_no_created_series_double_the_families() -> None:
    text = generate_latest(ControllerMetrics().registry).decode()
    assert "_created" not in text
    assert "plane_controller_schedule_requests_total" in text
