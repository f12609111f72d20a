"""Prometheus metrics and readiness of `dockmoat dind pool` (`--metrics-listen`).

As for `dockmoat serve` (gateway/metrics.py, whose listener this reuses): the pool
counts with plain integers under a lock of their own (`PoolCounts`; the pool is
threaded: starters, a health checker, one thread per request) and a collector turns
the counts and the pool's state into metric families only when Prometheus scrapes.
The listener runs on an event loop in a thread of its own.

- `GET /metrics`: the metrics below.
- `GET /ready`: 200 when the pool holds an idle daemon, or refills after a hand-out
  (a daemon started before, none failed since, one is starting); else 503 with the
  reason (still filling, a start failed, stopping).
- `GET /live`: 200 while the process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from dockmoat.gateway.metrics import MetricsListener, histogram_family

if TYPE_CHECKING:
    from dockmoat.gateway.config import Endpoint

log = logging.getLogger("dockmoat.dind.pool")

# Hand-out latency, seconds: a ping of the warm daemon and a rename take tens of
# milliseconds; a keyed request may wait up to 20 s for a daemon being started.
HANDOUT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
# Start duration, seconds: until the new daemon answers /_ping over mutual TLS.
START_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
HANDOUT_OUTCOMES = ("served", "empty", "error")
START_OUTCOMES = ("ok", "failed")
_PREFIX = "dockmoat_dind_pool_"


@dataclass(frozen=True, slots=True)
class PoolState:
    """The pool now (PoolService.state): daemons per slot, the cache key or "" for plain."""

    idle: dict[str, int]
    target: dict[str, int]
    starting: int
    stopping: bool


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds

    def copy(self) -> _Histogram:
        other = _Histogram(self.bounds)
        other.buckets = list(self.buckets)
        other.seconds = self.seconds
        return other


class PoolCounts:
    """Counts kept by the pool's threads; read by `Collector` at scrape time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handouts = dict.fromkeys(HANDOUT_OUTCOMES, 0)
        self.handout_latency = _Histogram(HANDOUT_BUCKETS)
        self.starts = dict.fromkeys(START_OUTCOMES, 0)
        self.start_duration = _Histogram(START_BUCKETS)
        self.evictions = 0
        # Failed starts since the last one that worked, and the last failure's message.
        self.failing = 0
        self.last_failure = ""

    def handout(self, outcome: str, seconds: float | None) -> None:
        """One answered request (`seconds`: received to answer sent; None: not sent)."""
        with self.lock:
            self.handouts[outcome] += 1
            if seconds is not None:
                self.handout_latency.observe(seconds)

    def started(self, seconds: float, failure: str | None = None) -> None:
        """One warm daemon start, and its time: ok, or failed with `failure`."""
        with self.lock:
            if failure is None:
                self.starts["ok"] += 1
                self.start_duration.observe(seconds)
                self.failing = 0
            else:
                self.starts["failed"] += 1
                self.failing += 1
                # /ready says it in one line: an error's first (a start's may add log lines).
                self.last_failure = (failure.strip().splitlines() or ["?"])[0][:300]

    def evicted(self) -> None:
        """An idle daemon removed because it stopped answering /_ping."""
        with self.lock:
            self.evictions += 1

    def snapshot(self) -> PoolCounts:
        """A consistent copy (scrapes and readiness read it off the pool's threads)."""
        with self.lock:
            other = PoolCounts()
            other.handouts = dict(self.handouts)
            other.handout_latency = self.handout_latency.copy()
            other.starts = dict(self.starts)
            other.start_duration = self.start_duration.copy()
            other.evictions = self.evictions
            other.failing = self.failing
            other.last_failure = self.last_failure
            return other


def outcome(reply: dict[str, object]) -> str:
    """A hand-out answer's outcome: served, empty, or error (any other refusal: a shape
    the pool does not hold, a name in use, a failed rename, a bad request)."""
    if reply.get("ok") is True:
        return "served"
    return "empty" if reply.get("reason") == "empty" else "error"


def ready(state: PoolState, counts: PoolCounts) -> tuple[bool, str]:
    """Whether `up` would get a warm daemon now or shortly, and why (one line)."""
    if state.stopping:
        return False, "stopping"
    idle = sum(state.idle.values())
    if idle:
        return True, f"ready: {idle} idle daemon(s)"
    counts = counts.snapshot()
    if counts.failing:
        return False, f"no idle daemon; the last start failed: {counts.last_failure}"
    if state.starting and counts.starts["ok"]:
        return True, f"refilling: {state.starting} daemon(s) starting"
    if state.starting:
        return False, f"filling: {state.starting} daemon(s) starting, none ready yet"
    return False, "no idle daemon and none starting"


class Collector:
    """The pool's counts and state as Prometheus metric families."""

    def __init__(self, state: Callable[[], PoolState], counts: PoolCounts) -> None:
        self.state = state
        self.counts = counts

    def describe(self) -> list[Metric]:
        return []  # unchecked registration: families are made at scrape time

    def collect(self) -> Iterator[Metric]:
        state = self.state()
        counts = self.counts.snapshot()
        by_key = ("cache_key",)
        yield _labelled(
            GaugeMetricFamily(
                _PREFIX + "idle_daemons",
                'Warm daemons ready to hand out now, by cache key ("" for plain ones).',
                labels=by_key,
            ),
            state.idle,
        )
        yield _labelled(
            GaugeMetricFamily(
                _PREFIX + "target_size",
                'Warm daemons the pool keeps, by cache key ("" for plain ones: --size; 1 per key).',
                labels=by_key,
            ),
            state.target,
        )
        yield GaugeMetricFamily(
            _PREFIX + "starting_daemons", "Warm daemons being started now.", value=state.starting
        )
        yield _labelled(
            CounterMetricFamily(
                _PREFIX + "handouts",
                "Requests for a warm daemon, by outcome: served, empty (none ready), error "
                "(refused or failed: another shape, a name in use, an engine error).",
                labels=("outcome",),
            ),
            counts.handouts,
        )
        yield histogram_family(
            _PREFIX + "handout_duration_seconds",
            "Time from a request received to its answer sent.",
            HANDOUT_BUCKETS,
            counts.handout_latency.buckets,
            counts.handout_latency.seconds,
        )
        yield _labelled(
            CounterMetricFamily(
                _PREFIX + "daemon_starts",
                "Warm daemon starts, by outcome: ok or failed (a busy cache key is not counted).",
                labels=("outcome",),
            ),
            counts.starts,
        )
        yield histogram_family(
            _PREFIX + "daemon_start_duration_seconds",
            "Time to start a warm daemon until it answers /_ping (successful starts).",
            START_BUCKETS,
            counts.start_duration.buckets,
            counts.start_duration.seconds,
        )
        yield CounterMetricFamily(
            _PREFIX + "health_evictions",
            "Idle daemons removed because they stopped answering /_ping "
            "(the periodic check or the one before a hand-out).",
            value=counts.evictions,
        )


def _labelled(
    family: GaugeMetricFamily | CounterMetricFamily, values: dict[str, int]
) -> GaugeMetricFamily | CounterMetricFamily:
    """`family`, of one label, with a sample per label value."""
    for label, value in sorted(values.items()):
        family.add_metric((label,), value)
    return family


class MetricsThread:
    """Serve's metrics listener for the threaded pool: on an event loop of its own."""

    def __init__(
        self, endpoint: Endpoint, state: Callable[[], PoolState], counts: PoolCounts
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector(state, counts))

        async def check() -> tuple[bool, str]:
            return ready(state(), counts)

        self.listener = MetricsListener(endpoint, registry, check, log)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen, or raise ConfigError (the address is in use, ...)."""
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.thread = threading.Thread(target=loop.run_forever, name="pool-metrics", daemon=True)
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.listener.start(), loop).result()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        loop, thread = self.loop, self.thread
        self.loop = self.thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()

    async def _close(self) -> None:
        self.listener.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
