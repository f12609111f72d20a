"""`dockmoat dind pool --metrics-listen`: the collector's families (read back with
prometheus_client's own text parser), readiness, the option's parsing, and the pool's
counting through its real socket with a stand-in manager (no engine)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dockmoat.cli import main
from dockmoat.dind import pool as pool_module
from dockmoat.dind import pool_client
from dockmoat.dind.info import DindInfo
from dockmoat.dind.manager import DindManager
from dockmoat.dind.pool import PoolService, metrics_endpoint
from dockmoat.dind.pool_metrics import Collector, PoolCounts, PoolState, outcome, ready
from dockmoat.dind.spec import DindOptions
from dockmoat.errors import ConfigError, EngineError

P = "dockmoat_dind_pool_"


def _scrape(state: PoolState, counts: PoolCounts) -> dict[str, Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(lambda: state, counts))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family: Any, suffix: str = "") -> list[Sample]:
    return [s for s in family.samples if s.name == family.name + suffix]


def test_collector_families_parse_with_their_labels_and_values() -> None:
    counts = PoolCounts()
    for result, seconds in (("served", 0.03), ("served", 0.2), ("empty", 0.004), ("error", 40.0)):
        counts.handout(result, seconds)
    counts.handout("error", None)  # the client left: counted, no latency
    for seconds in (2.5, 4.0, 200.0):
        counts.started(seconds)
    counts.started(60.0, "image gone")
    counts.evicted()
    counts.evicted()
    state = PoolState(idle={"": 1, "app": 0}, target={"": 2, "app": 1}, starting=1, stopping=False)

    families = _scrape(state, counts)

    assert set(families) == {
        P + "idle_daemons", P + "target_size", P + "starting_daemons", P + "handouts",
        P + "handout_duration_seconds", P + "daemon_starts",
        P + "daemon_start_duration_seconds", P + "health_evictions",
    }  # fmt: skip
    assert all(family.documentation for family in families.values())
    types = {name: family.type for name, family in families.items()}
    assert types[P + "idle_daemons"] == types[P + "target_size"] == "gauge"
    assert types[P + "handouts"] == types[P + "daemon_starts"] == "counter"
    assert types[P + "health_evictions"] == "counter"
    assert types[P + "handout_duration_seconds"] == "histogram"

    def by(name: str, label: str, suffix: str = "") -> dict[str, float]:
        return {s.labels[label]: s.value for s in _samples(families[name], suffix)}

    assert by(P + "idle_daemons", "cache_key") == {"": 1, "app": 0}
    assert by(P + "target_size", "cache_key") == {"": 2, "app": 1}
    assert _samples(families[P + "starting_daemons"])[0].value == 1
    assert by(P + "handouts", "outcome", "_total") == {"served": 2, "empty": 1, "error": 2}
    assert by(P + "daemon_starts", "outcome", "_total") == {"ok": 3, "failed": 1}
    assert _samples(families[P + "health_evictions"], "_total")[0].value == 2

    latency = families[P + "handout_duration_seconds"]
    buckets = by(P + "handout_duration_seconds", "le", "_bucket")
    assert buckets["0.01"] == 1 and buckets["0.05"] == 2 and buckets["0.25"] == 3
    assert buckets["30.0"] == 3 and buckets["+Inf"] == 4
    assert _samples(latency, "_count")[0].value == 4
    assert _samples(latency, "_sum")[0].value == pytest.approx(40.234)
    starts = families[P + "daemon_start_duration_seconds"]
    assert _samples(starts, "_count")[0].value == 3  # successful starts only
    assert by(P + "daemon_start_duration_seconds", "le", "_bucket")["5.0"] == 2


def test_an_empty_pool_scrapes_zeros() -> None:
    families = _scrape(PoolState({}, {"k": 1}, 0, False), PoolCounts())
    assert {s.labels["outcome"]: s.value for s in _samples(families[P + "handouts"], "_total")} == {
        "served": 0, "empty": 0, "error": 0,
    }  # fmt: skip
    assert _samples(families[P + "handout_duration_seconds"], "_count")[0].value == 0
    assert _samples(families[P + "idle_daemons"]) == []


def test_outcome_of_each_answer() -> None:
    assert outcome({"ok": True, "daemon": {}}) == "served"
    assert outcome({"ok": False, "reason": "empty"}) == "empty"
    for reason in ("shape", "exists", "error"):
        assert outcome({"ok": False, "reason": reason}) == "error"


def test_ready_needs_an_idle_daemon_or_a_refill_without_failures() -> None:
    counts = PoolCounts()
    filling = PoolState({"": 0}, {"": 1}, starting=1, stopping=False)
    assert ready(filling, counts) == (False, "filling: 1 daemon(s) starting, none ready yet")
    counts.started(3.0)
    assert ready(PoolState({"": 1}, {"": 1}, 0, False), counts)[0] is True
    assert ready(filling, counts) == (True, "refilling: 1 daemon(s) starting")
    counts.started(60.0, "dockerd did not answer /_ping\nlast log lines:\n  level=fatal")
    ok, why = ready(filling, counts)
    assert not ok and why.endswith("the last start failed: dockerd did not answer /_ping")
    assert ready(PoolState({"": 1}, {"": 1}, 0, False), counts)[0] is True
    assert ready(PoolState({"": 1}, {"": 1}, 0, True), counts) == (False, "stopping")
    counts.started(3.0)
    assert ready(PoolState({"k": 0}, {"k": 1}, 0, False), counts) == (
        False, "no idle daemon and none starting",
    )  # fmt: skip


def test_metrics_listen_parses_as_serves_option(tmp_path: Path) -> None:
    pool_sock = tmp_path / "pool.sock"
    tcp = metrics_endpoint("tcp://127.0.0.1:9101", pool_sock)
    assert (tcp.kind, tcp.host, tcp.port) == ("tcp", "127.0.0.1", 9101)
    unix = metrics_endpoint(f"unix://{tmp_path}/m.sock", pool_sock)
    assert (unix.kind, unix.path) == ("unix", tmp_path / "m.sock")
    for bad, said in (
        ("http://127.0.0.1:9101", "expected tcp://HOST:PORT or unix:///path"),
        ("unix://relative.sock", "must be absolute"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        (f"unix://{pool_sock}", "is also the pool's --socket"),
    ):
        with pytest.raises(ConfigError, match=said):
            metrics_endpoint(bad, pool_sock)


@pytest.mark.parametrize("url", ["9101", "unix://m.sock", "tcp://127.0.0.1:99999"])
def test_a_bad_metrics_listen_ends_the_pool_command_with_one_line_and_2(
    url: str, tmp_path: Path
) -> None:
    engine = f"unix://{tmp_path}/no-engine.sock"
    args = ["dind", "pool", "--socket", str(tmp_path / "p.sock"), "--metrics-listen", url,
            "--host", engine, "--state-dir", str(tmp_path / "state")]  # fmt: skip
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockmoat: ") and url in lines[0], lines
    assert "Traceback" not in result.output


# ------------------------------------------------- the pool's counting, no engine


class _Manager:
    """The parts of DindManager a pool uses; starts wait for `gate`, or fail on demand."""

    host = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.gate = threading.Semaphore(1)
        self.fail = False
        self.started = 0

    def launch_warm(self, options: DindOptions, who: str, pool_id: str) -> tuple[str, DindInfo]:
        while not self.gate.acquire(timeout=0.05):
            pass
        if self.fail:
            raise EngineError("the nested daemon did not answer /_ping")
        self.started += 1
        container = f"c{self.started}"
        info = DindInfo(container, container, container, "net", "10.0.0.2", 1, self.tmp)
        return container, info

    def assign(self, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
        assert warm is not None
        return dataclasses.replace(warm, name=name)

    def destroy(self, container: str) -> list[str]:
        return [container]

    def progress(self, message: str) -> None:
        pass


def _http(sock: Path, target: str) -> tuple[int, str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(sock))
        client.sendall(f"GET {target} HTTP/1.1\r\nHost: pool\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PoolService, _Manager]]:
    monkeypatch.setattr(pool_module, "_BACKOFF", 0.05)
    manager = _Manager(tmp_path)
    service = PoolService(
        cast(DindManager, manager), DindOptions(image="dind:test"), 1, tmp_path / "pool.sock",
        starters=1, metrics=metrics_endpoint(f"unix://{tmp_path}/m.sock", tmp_path / "pool.sock"),
    )  # fmt: skip
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    yield service, manager
    service.stop()
    for _ in range(8):
        manager.gate.release()
    thread.join(10)
    assert not thread.is_alive()
    assert not (tmp_path / "m.sock").exists()


def test_the_pool_counts_hand_outs_starts_and_evictions(
    pool: tuple[PoolService, _Manager], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, manager = pool
    metrics = tmp_path / "m.sock"
    dead: set[str] = set()
    monkeypatch.setattr(service, "_alive", lambda warm: warm.container not in dead)
    _until(lambda: metrics.exists() and _http(metrics, "/ready")[0] == 200)
    assert _http(metrics, "/ready") == (200, "ready: 1 idle daemon(s)\n")
    assert _http(metrics, "/live") == (200, "live\n")

    # The idle daemon stopped answering: evicted at the hand-out, and nothing else is ready.
    dead.add("c1")
    assert pool_client.take(service.socket_path, "job-a", service.shape()) is None
    _until(lambda: service.state().starting == 1)
    assert _http(metrics, "/ready") == (200, "refilling: 1 daemon(s) starting\n")

    manager.fail = True  # the replacement fails: not ready
    manager.gate.release()
    _until(lambda: service.counts.snapshot().starts["failed"] == 1)
    status, why = _http(metrics, "/ready")
    assert status == 503 and "the last start failed" in why

    manager.fail = False
    manager.gate.release()
    _until(lambda: service.ready_count() == 1)
    daemon = pool_client.take(service.socket_path, "job-b", service.shape())
    assert daemon is not None and daemon["name"] == "job-b"
    assert pool_client.take(service.socket_path, "job-c", {"image": "other"}) is None
    _until(lambda: service.state().starting == 1)

    status, text = _http(metrics, "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    handouts = {s.labels["outcome"]: s.value for s in _samples(families[P + "handouts"], "_total")}
    assert handouts == {"served": 1, "empty": 1, "error": 1}
    latency = families[P + "handout_duration_seconds"]
    assert _samples(latency, "_count")[0].value == 3
    starts = {
        s.labels["outcome"]: s.value for s in _samples(families[P + "daemon_starts"], "_total")
    }
    assert starts == {"ok": 2, "failed": 1}
    assert _samples(families[P + "daemon_start_duration_seconds"], "_count")[0].value == 2
    assert _samples(families[P + "health_evictions"], "_total")[0].value == 1
    idle = {s.labels["cache_key"]: s.value for s in _samples(families[P + "idle_daemons"])}
    assert idle == {"": 0}  # job-b's replacement waits at the gate
    assert _samples(families[P + "starting_daemons"])[0].value == 1


def test_a_metrics_address_in_use_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        url = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        manager = _Manager(tmp_path)
        service = PoolService(
            cast(DindManager, manager), DindOptions(image="dind:test"), 1, tmp_path / "pool.sock",
            metrics=metrics_endpoint(url, tmp_path / "pool.sock"),
        )  # fmt: skip
        with pytest.raises(ConfigError, match=r"--metrics-listen .*address already in use"):
            service.serve()
    assert not (tmp_path / "pool.sock").exists()
    assert manager.started == 0
