"""Prometheus metrics and readiness of `dockmoat serve`, on a listener of their own.

Counting costs the request path a few dictionary and integer operations in
`Gateway.close_record` (which runs for every request anyway, for the audit log):
no prometheus_client object is touched per request. A collector turns the counts
into metric families when Prometheus scrapes (`--metrics-listen`), with the
prometheus_client library's exposition format.

- `GET /metrics`: the metrics below.
- `GET /ready`: 200 when the daemon behind the guard answers `GET /_ping` (a real
  request over the gateway's upstream pool), serve is not draining and tenancy's
  state database takes a write; else 503 with the reason.
- `GET /live`: 200 while the process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dockmoat.errors import ConfigError, UpstreamError
from dockmoat.policy.decision import WOULD_DENY

if TYPE_CHECKING:
    from dockmoat.gateway.config import Endpoint
    from dockmoat.gateway.sansio.exchange import Exchange
    from dockmoat.gateway.server import Gateway

log = logging.getLogger("dockmoat.gateway")

# Request latency buckets, seconds (Prometheus' defaults, plus finer ones below 5 ms:
# most requests through the guard take a millisecond or two).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DENIALS = frozenset({"deny", WOULD_DENY})
READY_TIMEOUT = 5.0
MAX_TENANTS = 4096
_MAX_HEAD = 8192


class Metrics:
    """Counts kept by the gateway; read by `Collector` at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.upstream_errors = 0
        self.reconnects = 0
        self.hijacked = 0  # streams relayed raw right now (attach, exec, BuildKit)
        # Denials (and would-be denials) per tenant, until its job closes: the summary
        # `job close` prints. Only denials are counted here, so it stays small.
        self.denials: dict[str, dict[tuple[str, str], int]] = {}

    def record(self, record: Exchange, seconds: float) -> None:
        """One finished request (Gateway.close_record)."""
        request = record.request
        decision = record.decision
        key = (request.route.name if request is not None else "-", decision, record.rule or "")
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds
        self.bytes_in += record.bytes_in
        self.bytes_out += record.bytes_out
        if record.status == 502 and decision != "deny":
            self.upstream_errors += 1
        if decision in _DENIALS:
            tenant = record.client.tenant or record.client.listener or "-"
            counts = self.denials.get(tenant)
            if counts is None:
                if len(self.denials) >= MAX_TENANTS:
                    return  # bounded (jobs that expired unclosed); the audit log has it all
                counts = self.denials[tenant] = {}
            what = (decision, record.rule or "")
            counts[what] = counts.get(what, 0) + 1

    def take_denials(self, tenant: str) -> list[dict[str, object]]:
        """The tenant's denials so far, forgotten (its job closes)."""
        counts = self.denials.pop(tenant, {})
        return [
            {"decision": decision, "rule": rule, "count": count}
            for (decision, rule), count in sorted(counts.items(), key=lambda item: -item[1])
        ]


class Collector:
    """The gateway's counts and state as Prometheus metric families."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def describe(self) -> list[Metric]:
        return []  # unchecked registration: families are made at scrape time

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        metrics = gateway.metrics
        requests = CounterMetricFamily(
            "dockmoat_requests",
            "Requests handled, by route, decision (allow, rewrite, deny, would_deny, "
            "refused, error) and rule.",
            labels=("route", "decision", "rule"),
        )
        for (route, decision, rule), count in list(metrics.requests.items()):
            requests.add_metric((route, decision, rule), count)
        yield requests
        yield histogram_family(
            "dockmoat_request_duration_seconds",
            "Time from a request's first byte to the end of its answer.",
            BUCKETS,
            metrics.buckets,
            metrics.seconds,
        )
        transferred = CounterMetricFamily(
            "dockmoat_bytes", "Bytes relayed, from clients (in) and to them (out).",
            labels=("direction",),
        )  # fmt: skip
        transferred.add_metric(("in",), metrics.bytes_in)
        transferred.add_metric(("out",), metrics.bytes_out)
        yield transferred
        yield CounterMetricFamily(
            "dockmoat_upstream_errors",
            "Requests answered 502 because the daemon could not be reached or failed.",
            value=metrics.upstream_errors,
        )
        yield CounterMetricFamily(
            "dockmoat_upstream_reconnects",
            "Connections to the daemon that succeeded after one had failed.",
            value=metrics.reconnects,
        )
        connections = sum(len(entry.connections) for entry in gateway.listeners.values())
        yield GaugeMetricFamily(
            "dockmoat_open_connections", "Client connections open now.", value=connections
        )
        yield GaugeMetricFamily(
            "dockmoat_hijacked_streams",
            "Streams relayed raw now (attach, exec, BuildKit sessions).",
            value=metrics.hijacked,
        )
        static = {listener.endpoint.url for listener in gateway.settings.listeners}
        jobs = sum(1 for url in gateway.listeners if url not in static)
        yield GaugeMetricFamily(
            "dockmoat_open_jobs", "Job sockets open now (dockmoat job open).", value=jobs
        )
        yield GaugeMetricFamily(
            "dockmoat_listeners", "Sockets serve listens on now.", value=len(gateway.listeners)
        )
        pending = GaugeMetricFamily(
            "dockmoat_tenants_with_denials",
            "Tenants with denials since they started (the job close summary).",
            value=len(metrics.denials),
        )
        yield pending
        audit = gateway.audit
        yield CounterMetricFamily(
            "dockmoat_audit_dropped",
            "Audit entries not written: the disk failed or was full, or could not keep up "
            "(requests go on; the file says audit_dropped_before after the gap).",
            value=audit.dropped_total,
        )
        yield CounterMetricFamily(
            "dockmoat_audit_write_errors",
            "Writes of a batch of audit entries that failed (a full or failing disk).",
            value=audit.write_errors,
        )
        yield GaugeMetricFamily(
            "dockmoat_audit_failing",
            "1 while the audit log is losing entries (its last write failed, or its queue "
            "overflowed), until a batch is written again.",
            value=1 if audit.failing else 0,
        )
        yield GaugeMetricFamily(
            "dockmoat_audit_queued_entries",
            "Audit entries waiting to be written.",
            value=audit.queued,
        )
        yield GaugeMetricFamily(
            "dockmoat_warn_mode",
            "1 when serve's own policy forwards would-be denials (warn mode).",
            value=1 if getattr(gateway.policy, "mode", "enforce") == "warn" else 0,
        )


def histogram_family(
    name: str, documentation: str, bounds: Sequence[float], counts: Sequence[int], total: float
) -> HistogramMetricFamily:
    """A histogram from per-bucket counts (`counts[bisect_left(bounds, value)] += 1`: one
    more count than bounds, the last for values past the largest) and their sum."""
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], cumulative, sum_value=total)
    return family


def registry_for(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(gateway))
    return registry


async def ready(gateway: Gateway) -> tuple[bool, str]:
    """Whether the guard can serve: not draining, the daemon answers `/_ping`, and the
    gateway's other checks pass (tenancy's state database can be written)."""
    if gateway.draining:
        return False, "draining"
    try:
        status, _headers, body = await asyncio.wait_for(
            gateway.upstream.request("GET", "/_ping"), READY_TIMEOUT
        )
    except (UpstreamError, OSError, TimeoutError) as error:
        return False, f"the daemon does not answer: {error or 'timeout'}"
    if status != 200:
        return False, f"the daemon answers /_ping with {status}: {body[:200]!r}"
    for check in gateway.readiness:
        ok, why = check()
        if not ok:
            return False, why
    return True, "ready"


def _answer(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class MetricsListener:
    """A `--metrics-listen` listener: plain HTTP/1.1, one request per connection;
    `/metrics` from a registry, `/ready` from a check, `/live`. Serve's (below) and
    `dind pool`'s (dind/pool_metrics.py)."""

    def __init__(
        self,
        endpoint: Endpoint,
        registry: CollectorRegistry,
        check: Callable[[], Awaitable[tuple[bool, str]]],
        logger: logging.Logger = log,
    ) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.check = check
        self.log = logger
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        from dockmoat.gateway.preflight import listen_error

        endpoint = self.endpoint
        try:
            if endpoint.kind == "unix":
                assert endpoint.path is not None
                endpoint.path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    if endpoint.path.is_socket():
                        endpoint.path.unlink()
                self.server = await asyncio.start_unix_server(self._handle, str(endpoint.path))
                endpoint.path.chmod(0o660)
            else:
                self.server = await asyncio.start_server(
                    self._handle, endpoint.host, endpoint.port, reuse_address=True
                )
        except OSError as error:
            raise ConfigError(
                str(listen_error(endpoint.url, error)).replace("--listen", "--metrics-listen")
            ) from error
        self.log.info("metrics on %s: /metrics, /ready, /live", endpoint.url)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            if self.endpoint.kind == "unix" and self.endpoint.path is not None:
                with contextlib.suppress(OSError):
                    if self.endpoint.path.is_socket():
                        self.endpoint.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > _MAX_HEAD:
                return
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            writer.write(await self._route(method, path))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        except Exception:  # a bug must not end the listener
            self.log.exception("metrics request failed")
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(self, method: str, path: str) -> bytes:
        if method not in ("GET", "HEAD"):
            return _answer(405, b"GET only\n")
        if path == "/metrics":
            started = time.monotonic()
            body = generate_latest(self.registry)
            self.log.debug("metrics scraped in %.1f ms", (time.monotonic() - started) * 1000)
            return _answer(200, body, CONTENT_TYPE_LATEST)
        if path == "/ready":
            ok, why = await self.check()
            return _answer(200 if ok else 503, f"{why}\n".encode())
        if path in ("/live", "/healthz"):
            return _answer(200, b"live\n")
        return _answer(404, b"/metrics, /ready or /live\n")


class MetricsServer(MetricsListener):
    """Serve's `--metrics-listen` listener: the gateway's metrics and readiness."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        super().__init__(endpoint, registry_for(gateway), lambda: ready(gateway))
        self.gateway = gateway
