"""The soak suite's reading of the guard's /metrics (bench/soak): the text parsed as
prometheus_client writes it, and the audit gap between two scrapes."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # bench/ is run from the checkout (python -m bench.soak)
    sys.path.insert(0, str(ROOT))

from bench.soak.harness import parse_metrics  # noqa: E402
from bench.soak.scenarios import AUDIT_DROPPED, AUDIT_FAILING, dropped_by_metrics  # noqa: E402


class Audit:
    def __init__(self, dropped: int, failing: int) -> None:
        self.dropped, self.failing = dropped, failing

    def describe(self) -> list[object]:
        return []

    def collect(self) -> list[object]:
        idle = GaugeMetricFamily("dockmoat_dind_pool_idle_daemons", "x", labels=("cache_key",))
        idle.add_metric(("",), 2)
        return [
            CounterMetricFamily("dockmoat_audit_dropped", "x", value=self.dropped),
            GaugeMetricFamily("dockmoat_audit_failing", "x", value=self.failing),
            idle,
        ]


def scrape(dropped: int, failing: int) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Audit(dropped, failing))  # type: ignore[arg-type]
    return parse_metrics(generate_latest(registry).decode())


def test_the_text_prometheus_client_writes_is_read_by_sample_name() -> None:
    metrics = scrape(2734, 1)
    assert metrics[AUDIT_DROPPED] == 2734.0
    assert metrics[AUDIT_FAILING] == 1.0
    assert metrics['dockmoat_dind_pool_idle_daemons{cache_key=""}'] == 2.0
    assert not any(name.startswith("#") for name in metrics)


def test_the_gap_between_two_scrapes() -> None:
    assert dropped_by_metrics(scrape(10, 0), scrape(689, 0)) == 679
    assert dropped_by_metrics(scrape(0, 0), scrape(0, 0)) == 0
    assert dropped_by_metrics({}, scrape(5, 1)) is None  # the guard did not answer
    assert dropped_by_metrics(scrape(900, 0), scrape(3, 1)) is None  # restarted in between
