"""The gateway: listeners, and each client connection's task.

The framing and the answer relay (gateway/sansio/) and the decision (pipeline.py)
are pure; the socket I/O lives in this module and its neighbours: client.py (a
client connection's bytes and identity), upstream.py (the daemon connection pool),
fastlane.py (the same steps run from read callbacks) and tunnel.py (BuildKit's
upgraded connections). Per client connection, requests are handled one at a time in
order (pipelined requests wait, already parsed). A request's body is read from the
client only as fast as the daemon takes it (every write awaits `drain`), and answers
are relayed the same way, so memory stays flat whatever the body size. Hijacked
connections (attach, exec, websocket, BuildKit session) become a raw two-way relay
only after the daemon answered 101, with half-close passed through and no timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import logging
import os
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from dockmoat.api.bodies import BodyUnreadable, BuildSources
from dockmoat.api.engines import start_message
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.buildkit import decide as buildkit
from dockmoat.buildkit.relay import Call, Verdict
from dockmoat.errors import (
    ConfigError,
    UpstreamError,
)
from dockmoat.gateway import pipeline, tunnel
from dockmoat.gateway.audit import AuditLog
from dockmoat.gateway.client import ClientProtocol, ClientStream, client_identity, linger
from dockmoat.gateway.config import Endpoint, ListenerSettings, ServeSettings
from dockmoat.gateway.fastlane import Lane
from dockmoat.gateway.halfclose import close_write
from dockmoat.gateway.metrics import Metrics, MetricsServer
from dockmoat.gateway.pins import BindPins
from dockmoat.gateway.preflight import listen_error
from dockmoat.gateway.sansio.answer import Answer
from dockmoat.gateway.sansio.exchange import Abort, BodyRefused, Exchange
from dockmoat.gateway.sansio.http import (
    LAST_CHUNK,
    BodyData,
    MessageEnd,
    RequestEvent,
    RequestHead,
    UpgradeStart,
    chunk,
    error_response,
)
from dockmoat.gateway.sansio.request import (
    Bind,
    Command,
    Connect,
    Decide,
    Finish,
    Forward,
    Read,
    RefuseTunnel,
    Reply,
    RequestExchange,
)
from dockmoat.gateway.stages import UNTOUCHED, Context, PermissivePolicy, Policy, RouteFacts, Stage
from dockmoat.gateway.tlslisten import HalfCloseTls
from dockmoat.gateway.upstream import (
    READ_SIZE,
    PooledUpstream,
    UpstreamConn,
    UpstreamPool,
    learn_engine,
)
from dockmoat.policy.decision import WOULD_DENY, Decision, Deny

log = logging.getLogger("dockmoat.gateway")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class Listener:
    settings: ListenerSettings
    server: asyncio.Server
    policy: Policy | None
    stage: Stage | None
    connections: set[asyncio.Task[None]] = field(default_factory=set)


class Gateway:
    """The running `dockmoat serve`: listeners sharing one upstream pool and audit log.

    Embeddable: `add_listener`/`remove_listener` work at run time (tenancy's
    job sockets), each listener with its own tenant, policy and stage.
    """

    def __init__(
        self,
        settings: ServeSettings,
        policy: Policy,
        *,
        stage: Stage | None = None,
        audit: AuditLog | None = None,
        pins: BindPins | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.pins = pins
        self.default_stage = stage
        self.limits = settings.limits
        self.pool = UpstreamPool(settings.upstream, settings.limits)
        self.upstream = PooledUpstream(self.pool, settings.limits.max_json_response)
        self.pool.on_reconnect = self._relearn_engine
        self.audit = audit or AuditLog(settings.audit_log)
        self.listeners: dict[str, Listener] = {}
        self._ids = itertools.count(1)
        self.busy: set[asyncio.Task[None]] = set()
        self._spawned: set[asyncio.Task[None]] = set()
        self.draining = False
        self.builds = buildkit.Builds()  # BuildKit sessions and build ids, per owner
        self.metrics = Metrics()  # counted in close_record; served by --metrics-listen
        self.metrics_server: MetricsServer | None = None
        # More for `/ready` to check than the daemon: (ready?, why not) each, e.g.
        # tenancy's state database being writable.
        self.readiness: list[Callable[[], tuple[bool, str]]] = []

    # --- listeners ---

    async def add_listener(
        self,
        listener: ListenerSettings,
        *,
        policy: Policy | None = None,
        stage: Stage | None = None,
    ) -> None:
        """Start listening; `policy`/`stage` override the gateway's for this listener."""
        url = listener.endpoint.url
        if url in self.listeners:
            raise ConfigError(f"already listening on {url}")
        stage = stage if stage is not None else self.default_stage
        holder: dict[str, Listener] = {}
        loop = asyncio.get_running_loop()

        def start(protocol: ClientProtocol, transport: asyncio.Transport) -> ClientStream:
            entry = holder["listener"]
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
            conn_id = next(self._ids)
            client = client_identity(entry.settings, writer)

            # A stage that does nothing for this connection is skipped by the fast lane.
            applies = entry.stage is not None and entry.stage.applies_to(client)
            lane = Lane(self, entry, conn_id, client, writer, entry.stage if applies else None)
            stream = ClientStream(transport, self.limits.max_head, self.limits.head_timeout, lane)
            task = loop.create_task(self._serve_client(entry, conn_id, client, stream, writer))
            stream.task = task
            entry.connections.add(task)
            task.add_done_callback(entry.connections.discard)
            return stream

        def protocol() -> ClientProtocol:
            return ClientProtocol(start)

        endpoint = listener.endpoint
        try:
            if endpoint.kind == "unix":
                sock = _unix_socket(endpoint, self.settings.socket_group)
                server = await loop.create_unix_server(protocol, sock=sock, backlog=1024)
            else:
                assert endpoint.port is not None
                tls = _server_tls(endpoint)
                server = await loop.create_server(
                    # TLS that still answers after the client's close_notify (tlslisten).
                    protocol if tls is None else lambda: HalfCloseTls(loop, protocol(), tls),
                    endpoint.host,
                    endpoint.port,
                    reuse_address=True,
                    backlog=1024,
                )
        except OSError as error:  # ssl.SSLError too; a port in use is known only here
            raise listen_error(url, error) from error
        holder["listener"] = Listener(listener, server, policy, stage)
        self.listeners[url] = holder["listener"]

    async def remove_listener(self, url: str, *, grace: float = 0.0) -> None:
        """Stop listening; connections of that listener end (after `grace` seconds)."""
        entry = self.listeners.pop(url, None)
        if entry is None:
            return
        entry.server.close()
        _remove_socket(entry.settings)
        if entry.connections and grace > 0:
            await asyncio.wait(set(entry.connections), timeout=grace)
        for task in list(entry.connections):
            task.cancel()

    def set_policy(self, policy: Policy) -> None:
        """Replace the policy (SIGHUP); requests in flight keep the one they started with."""
        self.policy = policy

    # --- life cycle ---

    async def learn_engine(self) -> None:
        """Learn the daemon's version (`/version`) and say it in the log; a daemon that
        does not answer leaves the last one known (decisions then use the table's floor)."""
        before = self.pool.engine
        try:
            engine = await learn_engine(self.pool, self.upstream)
        except UpstreamError as error:
            log.warning(
                "could not learn the upstream's version (%s); will retry on reconnect", error
            )
            return
        if engine == before:
            return
        warn, line = start_message(engine)
        log.log(logging.WARNING if warn else logging.INFO, "%s", line)

    def _relearn_engine(self) -> None:
        self.metrics.reconnects += 1
        self.spawn(self.learn_engine())

    async def start(self) -> None:
        self.audit.open()
        await self.learn_engine()
        for listener in self.settings.listeners:
            await self.add_listener(listener)
        if self.pins is not None:
            self.spawn(self.pins.sweep_forever(self.upstream))
        if self.settings.metrics is not None:
            self.metrics_server = MetricsServer(self, self.settings.metrics)
            await self.metrics_server.start()

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let requests in flight finish within the grace period."""
        self.stop_accepting()
        if self.busy:
            await asyncio.wait(set(self.busy), timeout=self.limits.drain_grace)
        for entry in self.listeners.values():
            for task in list(entry.connections):
                task.cancel()
        for task in list(self._spawned):
            task.cancel()
        self.listeners.clear()
        if self.pins is not None:  # what no container names now goes with serve
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pins.release(self.upstream, None), 10)
        self.pool.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        await self.audit.close()

    def stop_accepting(self) -> None:
        """Drain's first step, at once: no new connection, idle ones closed. A
        connection is idle when its task is in no exchange: not `busy`, which the fast
        lane's relay and hand-over count as well as the task's own exchanges."""
        self.draining = True
        for entry in self.listeners.values():
            entry.server.close()
            _remove_socket(entry.settings)
        idle = [
            task for entry in self.listeners.values() for task in entry.connections
            if task not in self.busy
        ]  # fmt: skip
        for task in idle:
            task.cancel()

    # --- one client connection ---

    async def _serve_client(
        self,
        listener: Listener,
        conn_id: int,
        client: ClientIdentity,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = stream.task
        try:
            while True:
                # An exchange the fast lane began and left to this task (carried out
                # even when draining: it is a request in flight), or the next request.
                handed = stream.take_handed()
                event = None
                if handed is None:
                    if self.draining:
                        break
                    try:
                        event = await stream.next_event(self.limits.idle_timeout)
                    except TimeoutError:
                        break
                    handed = stream.take_handed()
                    if handed is None and event is None:
                        break
                if task is not None:
                    self.busy.add(task)
                try:
                    keep = await self._exchange(listener, conn_id, client, stream, writer,
                                                event, handed)  # fmt: skip
                finally:
                    if task is not None:
                        self.busy.discard(task)
                if not keep:
                    break
        except (Abort, ConnectionError, OSError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection %d failed", conn_id)
        finally:
            leftover = stream.take_handed()
            if leftover is not None:  # cancelled before carrying it out: audited anyway
                self.close_record(leftover[0].record)
            stream.close()
            if stream.relay is not None:
                stream.relay.client_gone()
            if stream.linger:
                await linger(stream, writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _exchange(
        self,
        listener: Listener,
        conn_id: int,
        client: ClientIdentity,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        event: RequestEvent | None,
        handed: tuple[RequestExchange, Command] | None,
    ) -> bool:
        """Handle one request; True when the client connection stays open."""
        if handed is not None:
            exchange, command = handed
        else:
            policy = listener.policy or self.policy
            exchange = RequestExchange(Exchange(conn_id, client), policy, listener.stage,
                                       max_body=self.limits.max_body)  # fmt: skip
        record = exchange.record
        try:
            if handed is None:
                assert event is not None
                command = exchange.start(event)
            keep = await self._handle(listener, stream, writer, exchange, command)
        finally:
            record.bytes_in += stream.take_bytes_in()
            self.close_record(record)
        return keep

    def close_record(self, record: Exchange) -> None:
        """The request is over: its audit entry, its counts (metrics), and a log line
        for denials, would-be denials and 5xx naming the job or listener."""
        if self.audit.enabled:
            self.audit.record(record.audit_entry(self.audit.stamp()))
        self.metrics.record(record, time.monotonic() - record.started)
        if record.status >= 500 or record.decision in ("deny", WOULD_DENY):
            client = record.client
            # A BuildKit call has no HTTP head of its own: its request names it.
            head, request = record.head, record.request
            method = head.method if head else request.method if request else "-"
            target = head.target if head else request.path if request else "-"
            log.info(
                "%s: %s %s -> %d %s %s",
                f"tenant {client.tenant} ({client.listener})" if client.tenant else client.listener,
                method,
                target,
                record.status,
                record.decision,
                record.rule or "",
            )

    # --- the fast lane ---

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run background work as a task (kept referenced until it ends, cancelled at close)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _handle(
        self,
        listener: Listener,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        exchange: RequestExchange,
        command: Command,
    ) -> bool:
        """Drive one request's exchange (sansio/request.py) from `command` on: carry out
        each command it gives and report what came of it, until it ends (the fast lane
        may have carried out the first ones); True when the connection stays open."""
        stage = exchange.stage
        policy = exchange.policy
        record = exchange.record
        ctx = Context(record.client, self.upstream)
        conn: UpstreamConn | None = None
        try:
            while True:
                if isinstance(command, Read):
                    if command.continue_first:
                        writer.write(_CONTINUE)
                    events = stream.events
                    # (The usual case: the end came in the same read as the head.)
                    next_event = events.popleft() if events else await stream.next_event(None)
                    command = exchange.read(next_event)
                elif isinstance(command, Decide):
                    outcome = await pipeline.decide(
                        command.request, policy, stage, ctx, form=command.form,
                        after=self.pins, engine=self.pool.engine,
                    )  # fmt: skip
                    command = exchange.decided(outcome)
                elif isinstance(command, Bind):
                    command = exchange.bound(self._bind_build(listener, command.request))
                elif isinstance(command, Connect):
                    if command.fresh:
                        self.pool.close()
                    try:
                        conn = await self.pool.acquire()
                    except UpstreamError as error:
                        command = exchange.connect_failed(error)
                    else:
                        command = exchange.connected()
                elif isinstance(command, Forward):
                    taken, conn = conn, None  # _forward releases it, whatever happens
                    assert taken is not None
                    command = await self._forward(listener, stream, writer, exchange, ctx, taken,
                                                  command)  # fmt: skip
                elif isinstance(command, Reply):
                    stream.linger = stream.linger or command.linger
                    data = error_response(command.status, command.message,
                                          keep_alive=command.keep_alive,
                                          head_only=command.head_only)  # fmt: skip
                    record.bytes_out += len(data)
                    writer.write(data)
                    await writer.drain()
                    return command.keep_alive
                elif isinstance(command, RefuseTunnel):
                    await self._refuse_tunnel(stream, writer, command.request, command.decision)
                    return False
                elif isinstance(command, Finish):
                    return command.keep
                else:
                    raise Abort
        finally:
            if conn is not None:  # taken, and the exchange ended before forwarding
                self.pool.release(conn, False)

    async def _forward(
        self,
        listener: Listener,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        exchange: RequestExchange,
        ctx: Context,
        conn: UpstreamConn,
        forward: Forward,
    ) -> Command:
        """Send the request on `conn` (its streamed body read by the scan as it passes)
        and relay the answer; what came of it, as the exchange's next command."""
        record = exchange.record
        assert record.head is not None
        request = forward.request
        scan: BodyScan | None = None
        reader = forward.scan
        if reader is not None:
            policy, stage = exchange.policy, exchange.stage
            scan = BodyScan(
                reader, lambda: pipeline.decide_body(reader, request, policy, stage, ctx)
            )
        reusable = False
        pump: asyncio.Task[None] | None = None
        try:
            conn.writer.write(forward.data)
            if forward.streaming:
                if forward.continue_first:
                    writer.write(_CONTINUE)
                pump = asyncio.create_task(
                    self._pump_body(stream, conn.writer, record.head.chunked, scan)
                )
            else:
                await conn.writer.drain()
            stage = exchange.stage
            answer = self.answer_for(
                record.head, request, None if stage is None else (stage, ctx),
                UNTOUCHED if stage is None else stage.facts(request),
            )  # fmt: skip
            relaying = self._relay_answer(listener, stream, writer, conn, record, request,
                                          answer)  # fmt: skip
            if scan is not None and pump is not None:
                relay = asyncio.ensure_future(relaying)
                await asyncio.wait((relay, pump), return_when=asyncio.FIRST_COMPLETED)
                refused = _refusal_of(pump)
                if refused is not None and not relay.done():
                    # The body was refused before its end went upstream: the daemon
                    # never gets a whole archive; its answer is not the client's.
                    relay.cancel()
                    await asyncio.gather(relay, return_exceptions=True)
                    return exchange.body_refused(refused)
                keep, reusable = await relay
            else:
                keep, reusable = await relaying
            if pump is not None:
                if not pump.done():
                    # The daemon answered before taking the whole body: the framing
                    # of the client's stream is lost; close both sides.
                    pump.cancel()
                    reusable = False
                    keep = False
                elif _refusal_of(pump) is not None:
                    raise Abort  # refused after the daemon had answered: cut both
                else:
                    pump.result()
            return exchange.answered(keep=keep)
        except (ConnectionError, OSError, UpstreamError) as error:
            return exchange.forward_failed(error, reused=conn.reused)
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
            self.pool.release(conn, reusable)

    async def _pump_body(
        self,
        stream: ClientStream,
        upstream: asyncio.StreamWriter,
        chunked: bool,
        scan: BodyScan | None = None,
    ) -> None:
        """Relay a streamed body. With a `scan`, its reader sees every byte before the
        daemon does, and the daemon gets neither the end of the archive nor the end of
        the body before the scan's decision: the last chunk is always held back, and
        from the archive's end on everything is (bounded)."""
        held: list[bytes] = []
        held_size = 0
        holding = False
        while True:
            event = await stream.next_event(None)
            if isinstance(event, BodyData):
                data = event.data
                if scan is None:
                    upstream.write(chunk(data) if chunked else data)
                    await upstream.drain()
                    continue
                if not holding:
                    try:
                        holding = scan.reader.feed(data)
                    except BodyUnreadable as error:
                        raise BodyRefused(pipeline.body_refusal(error)) from None
                    for piece in held:  # read, and not the end: it may go
                        upstream.write(chunk(piece) if chunked else piece)
                    held.clear()
                    held_size = 0
                    await upstream.drain()
                held.append(data)
                held_size += len(data)
                if held_size > MAX_HELD_BODY:
                    raise BodyRefused(pipeline.body_refusal(BodyUnreadable(
                        f"more than {MAX_HELD_BODY >> 20} MiB after the end of the archive"
                    )))  # fmt: skip
            elif isinstance(event, MessageEnd):
                if scan is not None:
                    decision = await scan.decide()
                    if isinstance(decision, Deny):
                        raise BodyRefused(decision)
                    for piece in held:
                        upstream.write(chunk(piece) if chunked else piece)
                if chunked:
                    upstream.write(LAST_CHUNK)
                await upstream.drain()
                return
            else:
                # Truncated or malformed body: the daemon must not run a partial request.
                upstream.close()
                raise Abort

    def answer_for(
        self,
        head: RequestHead,
        request: ApiRequest,
        staged: tuple[Stage, Context] | None,
        facts: RouteFacts,
    ) -> Answer:
        """The relay of one answer, bounded by this gateway's limits (task and fast lane)."""
        limits = self.limits
        return Answer(head, request, staged, facts, max_head=limits.max_head,
                      max_held=limits.max_json_response, pins=self.pins)  # fmt: skip

    async def _relay_answer(
        self,
        listener: Listener,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        conn: UpstreamConn,
        record: Exchange,
        request: ApiRequest,
        answer: Answer,
    ) -> tuple[bool, bool]:
        """Relay one answer (gateway/sansio/answer.py); (client connection stays open, upstream
        reusable). Raises UpstreamError when nothing of it reached the client (a 502 or a
        retry), Abort when the client's connection must close."""
        reader = conn.reader
        while True:
            if answer.follows_client:
                data = await self._read_unless_gone(stream, conn)
            else:
                data = await reader.read(READ_SIZE)
            step = answer.feed(data)
            record.status = step.status
            if step.broken is not None:
                if answer.error is not None:
                    log.error("rewriting the answer to connection %d failed", record.conn_id,
                              exc_info=answer.error)  # fmt: skip
                if step.status == 0:
                    raise UpstreamError(step.broken)  # nothing relayed yet
                raise Abort
            if step.send:
                record.bytes_out += len(step.send)
                writer.write(step.send)
                transport = writer.transport
                if transport.get_write_buffer_size() or transport.is_closing():
                    # Backpressure when the client is behind; an error when it is gone.
                    await writer.drain()
            switch = step.switch
            if switch is not None:
                await writer.drain()
                if switch.upgraded and request.route.name in tunnel.TUNNELS:
                    # BuildKit: read, not relayed raw
                    await self._buildkit(listener, stream, writer, conn, record, request,
                                         switch.leftover)  # fmt: skip
                else:
                    await self._hijack(stream, writer, conn, record, switch.leftover,
                                       upgraded=switch.upgraded)  # fmt: skip
                return False, False
            if step.end:
                return step.keep_client, step.reusable

    @staticmethod
    async def _read_unless_gone(stream: ClientStream, conn: UpstreamConn) -> bytes:
        """The daemon's next bytes of a filtered events stream, unless the client leaves
        first (Abort: the stream ends, its audit entry is written, the daemon's
        connection is closed). A tenant's stream drops other tenants' events, so it may
        write nothing for hours: without this an abandoned `docker events` held its
        daemon connection and never got its audit entry (found by the soak suite)."""
        gone = stream.gone()
        if gone.done():
            raise Abort
        reading = asyncio.ensure_future(conn.reader.read(READ_SIZE))
        await asyncio.wait((reading, gone), return_when=asyncio.FIRST_COMPLETED)
        if reading.done():
            return reading.result()
        reading.cancel()
        raise Abort

    async def _write(self, writer: asyncio.StreamWriter, record: Exchange, data: bytes) -> None:
        if data:
            record.bytes_out += len(data)
            writer.write(data)
            await writer.drain()

    async def _hijack(
        self,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        conn: UpstreamConn,
        record: Exchange,
        upstream_leftover: bytes,
        *,
        upgraded: bool,
    ) -> None:
        """Raw two-way relay after the daemon switched protocols; no timeouts."""
        pending = [e for e in stream.events if not isinstance(e, UpgradeStart)]
        if pending or (not upgraded and not stream.parser.idle):
            # Bytes the client sent after the request were already read as HTTP.
            raise Abort
        stream.events.clear()
        client_leftover = stream.raw_leftover
        stream.raw_leftover = b""

        async def to_upstream() -> None:
            if client_leftover:
                conn.writer.write(client_leftover)
                await conn.writer.drain()
            while True:
                data = await stream.read_raw()
                if not data:
                    break
                record.bytes_in += len(data)
                conn.writer.write(data)
                await conn.writer.drain()
            # Half-close: the daemon sees stdin end and still sends the rest of the output
            # (over TLS too, where asyncio has no write_eof: see halfclose).
            await close_write(conn.writer, conn.tcp)

        async def to_client() -> None:
            if upstream_leftover:
                await self._write(writer, record, upstream_leftover)
            while True:
                data = await conn.reader.read(READ_SIZE)
                if not data:
                    break
                await self._write(writer, record, data)
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()

        up = asyncio.create_task(to_upstream())
        down = asyncio.create_task(to_client())
        self.metrics.hijacked += 1
        try:
            await down
        finally:
            self.metrics.hijacked -= 1
            if not up.done():
                up.cancel()
            with contextlib.suppress(BaseException):
                await up

    # --- BuildKit (dockmoat.buildkit; the I/O in gateway/tunnel.py) ---

    def _bind_build(self, listener: Listener, request: ApiRequest) -> Deny | None:
        """`/session` claims its id for the client's tenant; `/build?session=` must be its own."""
        owner = buildkit.owner_of(listener.stage, request.client)
        if isinstance(owner, Deny):
            return owner
        return self.builds.bind(request, owner[0])

    async def _refuse_tunnel(
        self,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        request: ApiRequest,
        decision: Deny,
    ) -> None:
        """A refused `/grpc` or `/session` upgrade: the guard switches protocols itself
        and refuses every call with the decision's message (never an HTTP 403 that
        buildx takes for "no BuildKit here" and the 20.10 CLI cannot read)."""
        while stream.events and not isinstance(stream.events[0], UpgradeStart):
            stream.events.popleft()
        if not stream.events:
            await stream.next_event(None)  # the switch itself
        stream.events.clear()
        leftover, stream.raw_leftover = stream.raw_leftover, b""
        await tunnel.refuse_all(
            tunnel.TUNNELS[request.route.name], decision.message, stream.read_raw, writer,
            client_leftover=leftover,
        )  # fmt: skip

    async def _buildkit(
        self,
        listener: Listener,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        conn: UpstreamConn,
        record: Exchange,
        request: ApiRequest,
        upstream_leftover: bytes,
    ) -> None:
        """An upgraded `/grpc` or `/session`: HTTP/2 and gRPC read and decided call by call."""
        if any(not isinstance(e, UpgradeStart) for e in stream.events):
            raise Abort  # bytes the client sent after the request were read as HTTP
        stream.events.clear()
        client_leftover, stream.raw_leftover = stream.raw_leftover, b""
        owner = buildkit.owner_of(listener.stage, request.client)
        if isinstance(owner, Deny):
            raise Abort
        policy = listener.policy or self.policy
        stage = listener.stage
        sources: buildkit.SourceCheck | None = None
        if stage is not None or not isinstance(policy, PermissivePolicy):

            async def sources(build: ApiRequest, found: BuildSources) -> Decision:
                # A /build?version=2 build's Dockerfile, read from its session.
                return await pipeline.decide_build_sources(
                    found, build, policy, stage, Context(build.client, self.upstream)
                )

        decider = buildkit.BuildDecider(
            policy if isinstance(policy, buildkit.Policy) else buildkit.NoBuilds(),
            request.client,
            self.builds,
            *owner,
            session=request.header(buildkit.SESSION_HEADER) or "",
            sources=sources,
        )

        def count_in(size: int) -> None:
            record.bytes_in += size

        def count_out(size: int) -> None:
            record.bytes_out += size

        def audit_call(call: Call, _message: object, verdict: Verdict) -> None:
            # Each decided BuildKit call is a request of its own in the audit log.
            decision, rule, status, notes = buildkit.audited(verdict)
            routed = buildkit.audit_request(call, request.client)
            self.close_record(Exchange(
                record.conn_id, request.client, request=routed,
                decision=decision, rule=rule, notes=notes, status=status,
            ))  # fmt: skip

        self.metrics.hijacked += 1
        if decider.session:
            self.builds.session_opened(decider.session)
        try:
            await tunnel.run(
                tunnel.TUNNELS[request.route.name], decider, stream.read_raw, writer,
                conn.reader, conn.writer, client_leftover=client_leftover,
                upstream_leftover=upstream_leftover, count_in=count_in, count_out=count_out,
                on_verdict=audit_call,
            )  # fmt: skip
        finally:
            self.metrics.hijacked -= 1
            if decider.session:
                self.builds.session_ended(decider.session)


#: What a scanned body may carry after the end of its archive (tar's record padding is
#: 10 KiB; anything dockerd reads past the end it ignores).
MAX_HELD_BODY = 16 << 20


@dataclass(frozen=True, slots=True)
class BodyScan:
    """A streamed body read as it passes (api/bodies.py) and the decision on it."""

    reader: pipeline.BodyReader
    decide: Callable[[], Awaitable[Decision]]


def _refusal_of(pump: asyncio.Task[None]) -> Deny | None:
    if not pump.done() or pump.cancelled():
        return None
    error = pump.exception()
    return error.decision if isinstance(error, BodyRefused) else None


# --- sockets ------------------------------------------------------------------------


def _unix_socket(endpoint: Endpoint, group: str | None) -> socket.socket:
    """A listening unix socket, mode 0660 from its creation; a stale one is replaced."""
    assert endpoint.path is not None
    path = endpoint.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        mode = path.lstat().st_mode
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{path} exists and is not a socket; not replacing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody answers
        else:
            raise ConfigError(f"{path} is in use by a running server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    path.chmod(0o660)
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        except (KeyError, OSError) as error:
            sock.close()
            path.unlink(missing_ok=True)
            raise ConfigError(f"--socket-group {group}: {error}") from error
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _remove_socket(listener: ListenerSettings) -> None:
    path = listener.endpoint.path
    if listener.endpoint.kind == "unix" and path is not None:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def _server_tls(endpoint: Endpoint) -> ssl.SSLContext | None:
    if endpoint.tls is None:
        return None
    files = endpoint.tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    context.verify_mode = ssl.CERT_REQUIRED
    if files.ca is not None:
        context.load_verify_locations(cafile=str(files.ca))
        # The CA given is the trust anchor even when it is an intermediate (as in Go,
        # and so as dockerd treats --tlscacert).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


# --- running it -----------------------------------------------------------------------

StartHook = Callable[[Gateway], Awaitable[None]]


def remote_upstream_warning(settings: ServeSettings) -> str | None:
    """What serve says at start-up when the daemon may be on another machine.

    The policy reads this machine: bind sources are resolved on its file system and
    networks.subnet knows its routes, which are the daemon's only when it runs here.
    """
    if not settings.upstream.elsewhere or settings.profile == "permissive":
        return None
    return (
        f"upstream {settings.upstream.url} may be another machine: bind sources are checked "
        "against this machine's files and networks.subnet against its routes; run "
        "dockmoat serve on the daemon's host"
    )


async def serve(
    settings: ServeSettings,
    load_policy: Callable[[], Policy],
    *,
    stage: Stage | None = None,
    on_start: StartHook | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (drain, then return); SIGHUP reloads the policy."""
    import signal

    from dockmoat.gateway.pins import set_up as set_up_pins

    policy = load_policy()
    pins, pin_status = set_up_pins(settings.bind_pins, settings.pin_dir, settings.upstream)
    gateway = Gateway(settings, policy, stage=stage, pins=pins)
    try:
        await gateway.start()
        if on_start is not None:
            await on_start(gateway)
    except BaseException:
        await gateway.drain()  # a failed start removes the sockets it made
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        gateway.audit.reopen()  # logrotate moved it away
        try:
            gateway.set_policy(load_policy())
            log.info("policy reloaded")
        except Exception as error:  # noqa: BLE001 - any bad file keeps the old policy
            log.error("policy reload failed, keeping the old policy: %s", error)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info(
        "dockmoat serve: listening on %s; upstream %s; policy %s%s",
        ", ".join(
            f"{entry.settings.endpoint.url}"
            + (f" (tenant {entry.settings.tenant})" if entry.settings.tenant else "")
            for entry in gateway.listeners.values()
        ),
        settings.upstream.url,
        settings.profile,
        (f" + {settings.policy_file}" if settings.policy_file else "")
        + (" (warn mode)" if getattr(gateway.policy, "mode", "") == "warn" else ""),
    )
    if pins is not None or settings.bind_pins == "off":
        log.info("%s", pin_status)
    else:
        log.warning("%s", pin_status)
    warning = remote_upstream_warning(settings)
    if warning is not None:
        log.warning("%s", warning)
    await stop.wait()
    log.info("draining (up to %.0fs)", settings.limits.drain_grace)
    await gateway.drain()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
