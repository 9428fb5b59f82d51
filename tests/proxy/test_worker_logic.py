"""The pure parts of running the proxy in several processes: activity across
workers, the control channel's framing, summed metrics, restart pauses, and
the `proxy.workers` setting."""

from __future__ import annotations

import os
import random

import pytest
from prometheus_client import CollectorRegistry

from drone.config import ProxySettings, proxy_workers
from drone.proxy import control
from drone.proxy.activity import Changes, HeldByWorker, WorkerCounts
from drone.proxy.fleet import WorkerOptions, restart_delay
from drone.proxy.metrics import ProxyMetrics, total, zero_counters
from drone.routes import ActivityTracker, Route, RouteState, RouteTable
from shared.config import ConfigError


class Main:
    """The drone process's side: a tracker fed by per-worker views, as the fleet does."""

    def __init__(self, workers: int) -> None:
        self.now = 100.0
        self.tracker = ActivityTracker(clock=lambda: self.now)
        self.views = [HeldByWorker() for _ in range(workers)]

    def receive(self, worker: int, changes: Changes) -> None:
        begins, ends = self.views[worker].apply(changes)
        for backend in begins:
            self.tracker.begin(backend)
        for backend in ends:
            self.tracker.end(backend)

    def lose(self, worker: int) -> None:
        for backend in self.views[worker].lost():
            self.tracker.end(backend)


def test_a_worker_reports_only_transitions() -> None:
    reporter = WorkerCounts()
    assert reporter.begin("a") is True  # first request: report now
    assert reporter.begin("a") is False
    assert reporter.drain() == Changes(busy=["a"], idle=[])
    assert reporter.end("a") is False
    assert reporter.end("a") is True  # idle here: a report is due
    assert reporter.begin("a") is False  # busy again before it went out
    assert not reporter.drain()  # the drone process never needed to know
    assert reporter.end("a") is True
    assert reporter.drain() == Changes(busy=[], idle=["a"])
    assert not reporter.drain()


def test_busy_and_idle_within_one_batch_is_reported_as_both() -> None:
    reporter = WorkerCounts()
    reporter.begin("a")
    reporter.end("a")
    assert reporter.drain() == Changes(busy=["a"], idle=["a"])
    main = Main(1)
    main.tracker.track("a")
    main.now = 200.0
    main.receive(0, Changes(busy=["a"], idle=["a"]))
    assert main.tracker.active("a") == 0
    assert main.tracker.idle_since("a") == 200.0  # the idle clock started again


def test_an_end_without_a_begin_changes_nothing() -> None:
    reporter = WorkerCounts()
    assert reporter.end("ghost") is False
    assert not reporter.drain()
    assert reporter.active("ghost") == 0


def test_a_backend_stays_busy_while_any_worker_has_it_busy() -> None:
    main = Main(2)
    main.tracker.track("a")
    main.receive(0, Changes(busy=["a"]))
    main.receive(1, Changes(busy=["a"]))
    assert main.tracker.idle_since("a") is None
    main.now = 101.0
    main.receive(0, Changes(idle=["a"]))
    assert main.tracker.active("a") == 1
    assert main.tracker.idle_since("a") is None
    main.now = 102.0
    main.receive(1, Changes(idle=["a"]))
    assert main.tracker.active("a") == 0
    assert main.tracker.idle_since("a") == 102.0  # when the last one let go


def test_repeated_reports_count_once_per_worker() -> None:
    main = Main(1)
    main.receive(0, Changes(busy=["a"]))
    main.receive(0, Changes(busy=["a"]))
    assert main.tracker.active("a") == 1
    main.receive(0, Changes(idle=["a"]))
    main.receive(0, Changes(idle=["a"]))
    assert main.tracker.active("a") == 0


def test_local_traffic_and_worker_traffic_add_up() -> None:
    main = Main(1)
    main.tracker.begin("a")  # a request served by the drone process itself
    main.receive(0, Changes(busy=["a"]))
    main.tracker.end("a")
    assert main.tracker.idle_since("a") is None
    main.now = 150.0
    main.receive(0, Changes(idle=["a"]))
    assert main.tracker.idle_since("a") == 150.0


def test_a_lost_worker_ends_everything_it_held() -> None:
    main = Main(2)
    main.receive(0, Changes(busy=["a", "b"]))
    main.receive(1, Changes(busy=["b"]))
    main.now = 120.0
    main.lose(0)
    assert main.tracker.active("a") == 0
    assert main.tracker.idle_since("a") == 120.0
    assert main.tracker.active("b") == 1  # the other worker still holds it
    assert main.views[0].lost() == []
    # a late idle report from the lost worker is not counted twice
    main.receive(0, Changes(idle=["b"]))
    assert main.tracker.active("b") == 1


def test_reporter_and_view_agree_over_a_random_walk() -> None:
    """Whatever the interleaving, the drone's count is 1 exactly when the worker's is > 0
    after each batch."""
    rng = random.Random(7)
    reporter = WorkerCounts()
    main = Main(1)
    open_requests: dict[str, int] = {}
    for _ in range(5000):
        backend = rng.choice("abc")
        if open_requests.get(backend) and rng.random() < 0.5:
            reporter.end(backend)
            open_requests[backend] -= 1
        else:
            reporter.begin(backend)
            open_requests[backend] = open_requests.get(backend, 0) + 1
        if rng.random() < 0.2:
            main.receive(0, reporter.drain())
            for name in "abc":
                assert main.tracker.active(name) == (1 if open_requests.get(name) else 0)


def test_frames_split_anywhere_decode_whole() -> None:
    messages = [
        control.SetRoute("a", True, "10.0.0.2", 8080, "tok"),
        control.RemoveRoute("b"),
        control.Ping(3),
        control.Stop(5.0),
        control.Start(
            index=1,
            cluster="plane.test",
            settings=ProxySettings(listen="127.0.0.1:4000"),
            log_level="info",
            log_format="json",
            report_secs=1.0,
            routes=[control.SetRoute("c", False)],
        ),
    ]
    data = b"".join(control.frame(message) for message in messages)
    for step in (1, 3, 7, len(data)):
        reader = control.FrameReader(control.TO_WORKER)
        out: list[object] = []
        for offset in range(0, len(data), step):
            out += reader.feed(data[offset : offset + step])
        assert out == messages


def test_garbage_on_the_channel_is_an_error_not_a_crash() -> None:
    reader = control.FrameReader(control.TO_MAIN)
    with pytest.raises(control.ChannelError):
        reader.feed(b"\x00\x00\x00\x02\xc1\xc1")
    with pytest.raises(control.ChannelError):
        control.FrameReader(control.TO_MAIN).feed(b"\xff\xff\xff\xff")


def test_route_messages_mirror_the_table() -> None:
    seen: list[tuple[str, Route | None]] = []
    table = RouteTable()
    table.watch(lambda backend, route: seen.append((backend, route)))
    table.set_pending("a", "tok")
    table.set_ready("a", "10.0.0.2", 8080, "tok")
    table.remove("a")
    table.remove("a")  # already gone: nothing to tell
    assert [control.route_message(backend, route) for backend, route in seen] == [
        control.SetRoute("a", False, bearer_token="tok"),
        control.SetRoute("a", True, "10.0.0.2", 8080, "tok"),
        control.RemoveRoute("a"),
    ]
    copy = RouteTable()
    table.set_ready("b", "10.0.0.3", 8081, None)
    for message in [control.set_route(route) for route in table.snapshot()]:
        assert message.ready
        copy.set_ready(message.backend_id, message.host, message.port, message.bearer_token)
    assert copy.get("b") == Route("b", RouteState.READY, "10.0.0.3", 8081, None)


def test_metrics_sum_workers_and_keep_what_exited_ones_counted() -> None:
    metrics = ProxyMetrics(CollectorRegistry())
    metrics.count_response(200)
    metrics.client_connections = 1
    worker = zero_counters()
    worker.responses[2] = 5
    worker.client_connections = 3
    worker.upstream_buckets[0] = 5
    metrics.reports[1] = worker
    combined = metrics.combined()
    assert combined.responses[2] == 6
    assert combined.client_connections == 4
    assert combined.upstream_buckets[0] == 5
    metrics.worker_exited(1)
    combined = metrics.combined()
    assert combined.responses[2] == 6  # counters never go back
    assert combined.client_connections == 1  # its open connections went with it
    assert total([]) == zero_counters()


def test_restart_pauses_double_and_reset_after_a_long_run() -> None:
    options = WorkerOptions(restart_min_secs=0.1, restart_max_secs=1.0, stable_secs=10.0)
    delay = restart_delay(None, 0.5, options)
    assert delay == 0.1
    pauses = []
    for _ in range(6):
        delay = restart_delay(delay, 0.5, options)
        pauses.append(delay)
    assert pauses == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert restart_delay(delay, 30.0, options) == 0.1


def test_the_workers_setting() -> None:
    assert proxy_workers(ProxySettings()) == 1
    assert proxy_workers(ProxySettings(workers=3)) == 3
    assert proxy_workers(ProxySettings(workers="auto")) == (os.cpu_count() or 1)
    assert proxy_workers(ProxySettings(workers=0)) == (os.cpu_count() or 1)
    with pytest.raises(ConfigError, match=r"proxy\.workers"):
        proxy_workers(ProxySettings(workers=-2))
