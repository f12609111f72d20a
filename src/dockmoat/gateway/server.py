"""All of the gateway's socket I/O: listeners, client connections, the upstream pool, relays.

The framing (gateway.http) and the decision (gateway.pipeline) are pure; this
module moves bytes between them. Per client connection, requests are handled
one at a time in order (pipelined requests wait, already parsed). A request's
body is read from the client only as fast as the daemon takes it (every write
awaits `drain`), and answers are relayed the same way, so memory stays flat
whatever the body size. Hijacked connections (attach, exec, websocket,
BuildKit session) become a raw two-way relay only after the daemon answered
101, with half-close passed through and no timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import json
import logging
import os
import socket
import ssl
import stat
import struct
import time
from asyncio.streams import FlowControlMixin
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from dockmoat.api.endpoints import HIJACKING
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.errors import BodyTooLarge, ConfigError, ProtocolError, UpstreamError
from dockmoat.gateway import pipeline
from dockmoat.gateway.audit import AuditLog
from dockmoat.gateway.config import Endpoint, Limits, ListenerSettings, ServeSettings
from dockmoat.gateway.http import (
    LAST_CHUNK,
    BodyData,
    HeldAnswer,
    Invalid,
    MessageEnd,
    RawAnswer,
    RequestEvent,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    UpgradeStart,
    chunk,
    error_response,
    serialise_request_head,
    serialise_response_head,
)
from dockmoat.gateway.stages import (
    OnRequest,
    Policy,
    ResponseKind,
    bind_on_request,
    decides_inline,
    error_kind,
    inline_state,
    line_handler,
    response_kind,
)
from dockmoat.policy.decision import Deny
from dockmoat.tenancy.names import certificate_cn

log = logging.getLogger("dockmoat.gateway")

READ_SIZE = 256 * 1024
_PEERCRED = struct.Struct("3i")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


# --- upstream -----------------------------------------------------------------------


class _UpstreamProtocol(asyncio.StreamReaderProtocol):
    """A daemon connection: its bytes feed a StreamReader, or while `sink` is set
    (the fast lane, see `_FastRelay`) go straight to it, with no task woken."""

    sink: _FastRelay | None = None

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.upstream_data(data)
        else:
            super().data_received(data)

    def eof_received(self) -> bool:
        if self.sink is not None:
            self.sink.upstream_closed()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink is not None:
            self.sink.upstream_closed()
        super().connection_lost(exc)


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: _UpstreamProtocol
    reused: bool = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.protocol.sink = None
        with contextlib.suppress(Exception):
            self.writer.close()


def _client_tls(endpoint: Endpoint) -> ssl.SSLContext | None:
    if endpoint.tls is None:
        return None
    files = endpoint.tls
    if files.verify:
        context = ssl.create_default_context(cafile=str(files.ca) if files.ca else None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


class UpstreamPool:
    """Keep-alive connections to the daemon, reused one request at a time."""

    def __init__(self, endpoint: Endpoint, limits: Limits) -> None:
        self.endpoint = endpoint
        self._limits = limits
        self._idle: deque[_Conn] = deque()
        self._tls = _client_tls(endpoint)

    def take_idle(self) -> _Conn | None:
        """A pooled connection still open, without awaiting (the common case)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        return None

    async def acquire(self) -> _Conn:
        conn = self.take_idle()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)

        def protocol() -> _UpstreamProtocol:
            return _UpstreamProtocol(reader, loop=loop)

        try:
            if self.endpoint.kind == "unix":
                connecting = loop.create_unix_connection(protocol, str(self.endpoint.path))
            else:
                assert self.endpoint.host is not None and self.endpoint.port is not None
                connecting = loop.create_connection(
                    protocol,
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=self._tls,
                    server_hostname=self.endpoint.host if self._tls else None,
                )
            transport, proto = await asyncio.wait_for(
                connecting, self._limits.upstream_connect_timeout
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise UpstreamError(
                f"the Docker daemon at {self.endpoint.url} is not reachable: {error}"
            ) from error
        writer = asyncio.StreamWriter(transport, proto, reader, loop)
        return _Conn(reader, writer, proto)

    def release(self, conn: _Conn, reusable: bool) -> None:
        if reusable and conn.usable() and len(self._idle) < self._limits.upstream_idle_pool:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class PooledUpstream:
    """`UpstreamClient` for stages: a small, whole request over the pool."""

    def __init__(self, pool: UpstreamPool, max_body: int) -> None:
        self._pool = pool
        self._max_body = max_body

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1\r\n", "Host: docker\r\n"]
        for name, value in (headers or {}).items():
            if any(c in name + value for c in "\r\n"):
                raise ProtocolError("header not serialisable")
            lines.append(f"{name}: {value}\r\n")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        conn = await self._pool.acquire()
        reusable = False
        try:
            conn.writer.write("".join(lines).encode("latin-1") + (body or b""))
            await conn.writer.drain()
            reader = ResponseReader(head_request=method == "HEAD")
            head: ResponseHead | None = None
            out = bytearray()
            while True:
                data = await conn.reader.read(READ_SIZE)
                events = reader.feed(data) if data else reader.feed_eof()
                for event in events:
                    if isinstance(event, ResponseHead):
                        head = event
                    elif isinstance(event, BodyData):
                        out += event.data
                        if len(out) > self._max_body:
                            raise UpstreamError("upstream answer too large")
                    elif isinstance(event, Invalid | UpgradeStart):
                        raise UpstreamError(f"unexpected upstream answer to {method} {path}")
                    elif isinstance(event, MessageEnd) and head is not None:
                        reusable = head.keep_alive and not head.until_close
                        return head.status, {k.lower(): v for k, v in head.headers}, bytes(out)
        except OSError as error:
            raise UpstreamError(f"upstream failed: {error}") from error
        finally:
            self._pool.release(conn, reusable)


# --- client side ----------------------------------------------------------------------


class _ClientStream:
    """A client connection's bytes, parsed into request events for its task.

    Fed by `_ClientProtocol`. While the task waits for the next request and
    nothing is buffered (`lane_open`), a complete bodiless request is offered to
    the fast lane first (`Gateway._fast`), which handles it synchronously from
    the read callback, without waking the task; anything else wakes the task.

    Reads between requests (idle) and inside a request head (slow-loris guard)
    are bounded in time by one lazy timer per connection: it is (re)armed only
    when it fires, not per request, because a timer per read costs more than
    the rest of a small request's handling.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        max_head: int,
        head_timeout: float,
        lane: _Lane | None,
    ) -> None:
        self.transport = transport
        self.head_timeout = head_timeout
        self.parser = RequestReader(max_head)
        self.events: deque[RequestEvent] = deque()
        self.eof = False
        self.bytes_in = 0  # read from the client so far
        self.bytes_counted = 0  # of which audited with a request already
        self.raw_leftover = b""  # bytes after an upgrade request, not HTTP
        self.linger = False  # answered early: read what the client still sends, then close
        self.relay: _FastRelay | None = None  # the fast-lane exchange in flight
        self.planned: pipeline.Planned | None = None  # routed by the fast lane, then refused
        # Fast-lane decisions of this connection, by the exact bytes of the read that
        # carried the request (see `_Remembered`); made on the first repeat.
        self.remembered: dict[bytes, _Remembered] | None = None
        self.lane_open = False
        self._lane = lane
        self._chunks: deque[bytes] = deque()  # read, not yet parsed (or raw after a hijack)
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self._idle_timeout: float | None = None
        self._deadline: float | None = None  # of the timed wait in progress, if any
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    # --- from the protocol ---

    def data_received(self, data: bytes) -> None:
        lane = self._lane
        if self.lane_open and lane is not None:
            self.lane_open = False
            self.bytes_in += len(data)
            parser = self.parser
            fresh = parser.at_boundary
            remembered = self.remembered
            if fresh and remembered is not None:
                known = remembered.get(data)
                if known is not None:
                    try:
                        if lane.gateway._again(lane, self, known):
                            return
                    except Exception:  # nothing was sent: parsed and decided afresh below
                        log.exception("fast lane failed; the request is decided afresh")
            events = parser.feed(data)
            # The read held exactly one request, from a boundary to a boundary.
            whole = data if fresh and parser.at_boundary else None
            try:
                taken = lane.gateway._fast(lane, self, events, whole)
            except Exception:  # a bug in the fast lane must not lose the request
                log.exception("fast lane failed; the connection's task takes the request")
                taken = False
            if taken:
                return  # handled (or in flight) without the task
            self._queue(events)
            self.wake()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > 2 * READ_SIZE and not self._reading_paused:
            self._reading_paused = True  # backpressure: the task reads slower than the client
            self.transport.pause_reading()
        if self.relay is None:
            self.wake()

    def eof_received(self) -> None:
        self.eof = True
        if self.relay is None:
            self.wake()

    def connection_lost(self) -> None:
        self.eof = True
        if self.relay is not None:
            self.relay.client_gone()
        self.wake()

    def take_bytes_in(self) -> int:
        """Bytes read since the last request's share: this request's head and body."""
        count = self.bytes_in - self.bytes_counted
        self.bytes_counted = self.bytes_in
        return count

    def _queue(self, events: list[RequestEvent]) -> None:
        for event in events:
            if isinstance(event, UpgradeStart):
                self.raw_leftover = event.leftover
            self.events.append(event)

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- for the task ---

    async def _wait(self, timeout: float | None) -> None:
        """Until bytes, events or the end arrive (TimeoutError past `timeout`)."""
        waiter = self._waiter = self._loop.create_future()
        if timeout is not None:
            self._arm(self._loop.time() + timeout)
        try:
            await waiter
        except asyncio.CancelledError:
            task = self.task
            if self._expired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None  # our timer's, not someone else's
            raise
        finally:
            self._waiter = None
            self._deadline = None
            self.lane_open = False

    def _take_chunk(self) -> bytes:
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._reading_paused and self._buffered <= READ_SIZE:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def next_event(self, idle_timeout: float | None) -> RequestEvent | None:
        """The next event; None at end of stream. Times out only between requests."""
        events = self.events
        while not events:
            if self._chunks:
                data = self._take_chunk()
                self.bytes_in += len(data)
                self._queue(self.parser.feed(data))
                continue
            if self.eof:
                if not self.parser.idle:
                    events.append(Invalid("client closed mid-request"))
                    continue
                return None
            parser = self.parser
            timeout = self.head_timeout if parser.in_head else (
                idle_timeout if parser.idle else None
            )  # fmt: skip
            if parser.idle and self._lane is not None:
                self._idle_timeout = idle_timeout
                self.lane_open = True
            await self._wait(timeout)
        return events.popleft()

    async def read_raw(self) -> bytes:
        """The next bytes as read, not parsed (a hijacked connection); b"" at the end."""
        while not self._chunks:
            if self.eof:
                return b""
            await self._wait(None)
        return self._take_chunk()

    # --- the fast lane ---

    def relay_started(self, relay: _FastRelay) -> None:
        """A fast-lane exchange is in flight: no idle timeout, the task stays asleep."""
        self.relay = relay
        self._deadline = None

    def relay_done(self, keep: bool) -> None:
        """The fast-lane exchange ended: wait for the next request, or close."""
        self.relay = None
        if not keep:
            self.eof = True
            self.transport.close()
            self.wake()
        elif self._chunks or self.eof:
            self.wake()  # pipelined bytes or the client's end: the task takes over
        elif self._waiter is not None:
            self.lane_open = True
            if self._idle_timeout is not None:
                self._arm(self._loop.time() + self._idle_timeout)

    # --- the lazy idle timer ---

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.task is None:
            return  # no timed wait in progress; the next one re-arms
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        # Like asyncio.timeout: cancel the task (it waits in `_wait`), which turns it
        # into TimeoutError; the connection is then closed.
        self._expired = True
        self.task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _ClientProtocol(FlowControlMixin, asyncio.Protocol):
    """A client connection: its bytes go to its `_ClientStream`; its task serves it.

    FlowControlMixin gives `StreamWriter.drain` its backpressure, so the request
    handling writes through an ordinary StreamWriter.
    """

    def __init__(
        self,
        start: Callable[[_ClientProtocol, asyncio.Transport], _ClientStream],
    ) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self._start = start
        self.stream: _ClientStream | None = None
        self._closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        stream_transport = cast(asyncio.Transport, transport)
        self._over_tls = transport.get_extra_info("sslcontext") is not None
        self.stream = self._start(self, stream_transport)

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.data_received(data)

    def eof_received(self) -> bool:
        if self.stream is not None:
            self.stream.eof_received()
        # Keep the writing side open (half-close: output still flows after stdin ends);
        # TLS cannot half-close.
        return not self._over_tls

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.connection_lost()
        if not self._closed.done():
            self._closed.set_result(None)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stream is not None and self.stream.relay is not None:
            self.stream.relay.client_paused(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.stream is not None and self.stream.relay is not None:
            self.stream.relay.client_paused(False)

    def _get_close_waiter(self, stream: object) -> asyncio.Future[None]:
        return self._closed


def _identity(listener: ListenerSettings, writer: asyncio.StreamWriter) -> ClientIdentity:
    sock = writer.get_extra_info("socket")
    uid = pid = None
    address = None
    subject = None
    tenant = listener.tenant
    if listener.endpoint.kind == "unix" and sock is not None:
        with contextlib.suppress(OSError):
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
    else:
        peer = writer.get_extra_info("peername")
        if peer:
            address = f"{peer[0]}:{peer[1]}"
        cert = writer.get_extra_info("peercert")
        if cert:
            subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for (k, v) in rdn)
        if listener.tenant_from_cn:
            # The tenancy stage validates it and refuses a missing or unusable CN.
            tenant = certificate_cn(cert)
    return ClientIdentity(
        listener=listener.endpoint.url,
        tenant=tenant,
        uid=uid,
        pid=pid,
        tls_subject=subject,
        address=address,
    )


@dataclass(slots=True)
class _Exchange:
    """The audit record of one request being handled."""

    conn_id: int
    client: ClientIdentity
    head: RequestHead | None = None
    request: ApiRequest | None = None
    decision: str = "error"
    rule: str | None = None
    notes: tuple[str, ...] = ()
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.monotonic)

    def entry(self, stamp: str) -> dict[str, Any]:
        request = self.request
        return {
            "time": stamp,
            "conn": self.conn_id,
            "listener": self.client.listener,
            "tenant": self.client.tenant,
            "uid": self.client.uid,
            "pid": self.client.pid,
            "tls_subject": self.client.tls_subject,
            "address": self.client.address,
            "method": self.head.method if self.head else None,
            "path": self.head.target if self.head else None,
            "routed_path": request.path if request else None,
            "api_version": request.api_version if request else None,
            "route": request.route.name if request else None,
            "decision": self.decision,
            "rule": self.rule,
            "notes": list(self.notes),
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
        }


@dataclass(slots=True)
class Listener:
    settings: ListenerSettings
    server: asyncio.Server
    policy: Policy | None
    on_request: OnRequest | None
    stage: Any
    connections: set[asyncio.Task[None]] = field(default_factory=set)


T = TypeVar("T")


def _run_inline(coro: Coroutine[Any, Any, T]) -> T | None:
    """The result of a coroutine that finishes without suspending; None (closed) if not."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    return None


@dataclass(slots=True)
class _Lane:
    """What the fast lane needs to know of one client connection."""

    gateway: Gateway
    listener: Listener
    conn_id: int
    client: ClientIdentity
    writer: asyncio.StreamWriter


@dataclass(frozen=True, slots=True)
class _Remembered:
    """A fast-lane decision, kept to answer the same bytes again on the same connection.

    Pollers (`docker wait`, CI dashboards, health checks, the benchmark) send the
    same request head again and again on one keep-alive connection. The same
    bytes, read from a message boundary on the same connection (same listener,
    same client), give the same events; with the same policy object and the same
    stage state for this client (`stages.inline_state`), `plan` and `decide` give
    the same outcome: both are pure for bodiless GETs, the only routes kept. On a
    hit only the parse, the routing, the decision and the serialisation are
    skipped; the answer is relayed and audited as always.
    """

    events: tuple[RequestEvent, ...]
    head: RequestHead
    request: ApiRequest
    upstream_head: bytes
    decision: str
    rule: str
    notes: tuple[str, ...]
    json: bool
    errors_rewritten: bool
    policy: Policy
    state: object


_REMEMBERED_PER_CONNECTION = 16


class _FastRelay:
    """A fast-lane answer: the daemon's bytes relayed as read, from its read callback.

    Ends by `Gateway` bookkeeping as `_exchange` does (pool, audit, busy set). If
    the daemon's connection fails before any byte of the answer arrived (a pooled
    connection it had closed), the request goes back to the connection's task,
    which sends it again on a fresh connection or answers 502. An error answer the
    stage rewrites is handed, from its first byte, to `_relay_events` in a task.
    """

    __slots__ = (
        "answer", "conn", "done", "errors_rewritten", "events", "gateway", "held", "json",
        "listener", "paused", "record", "stream", "writer",
    )  # fmt: skip

    def __init__(
        self,
        gateway: Gateway,
        listener: Listener,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        record: _Exchange,
        events: Sequence[RequestEvent],
        errors_rewritten: bool,
        json_answer: bool,
    ) -> None:
        self.gateway = gateway
        self.listener = listener
        self.stream = stream
        self.writer = writer
        self.conn = conn
        self.record = record
        self.events = events
        self.errors_rewritten = errors_rewritten
        self.json = json_answer  # the stage rewrites the answer: held whole, then rewritten
        self.answer = (
            None
            if json_answer
            else RawAnswer(max_head=gateway.limits.max_head, rewrite_errors=errors_rewritten)
        )
        self.held = HeldAnswer() if json_answer else None
        self.done = False
        self.paused = False  # reading from the daemon, while the client catches up

    def upstream_data(self, data: bytes) -> None:
        self._relay(data)

    def upstream_closed(self) -> None:
        if not self.done:
            self._relay(b"")

    def _relay(self, data: bytes) -> None:
        if self.json:
            self._buffer_json(data)
            return
        assert self.answer is not None
        step = self.answer.feed(data)
        record = self.record
        if step.broken is not None:
            self._fail()
            return
        if step.hand_over:
            self._hand_over(step.send)
            return
        record.status = step.status
        if step.send:
            record.bytes_out += len(step.send)
            self.writer.write(step.send)
        if step.end:
            head = record.head
            keep = head is not None and head.keep_alive and step.keep_alive
            self._finish(keep=keep, reusable=step.keep_alive)

    def _buffer_json(self, data: bytes) -> None:
        """An answer the stage rewrites (tenancy's lists): whole, then rewritten, then sent."""
        held = self.held
        assert held is not None
        record = self.record
        if data:
            held.feed(data)
        else:
            held.feed_eof()
        if held.invalid is not None:
            self._fail()
            return
        if record.status == 0 and held.head_done:
            record.status = held.status  # from here a failure closes, never retries
        limits = self.gateway.limits
        if held.size > limits.max_json_response:
            self._finish(keep=False, reusable=False)  # nothing unfiltered was sent
            return
        if not held.done:
            return
        status = held.status
        response = held.head(limits.max_head) if status >= 400 else None
        rewrite = 200 <= status < 300 or (
            self.errors_rewritten and response is not None and _json_error(response)
        )
        out = b"".join(held.raw)  # what the stage does not change: relayed as read
        if rewrite:
            request = record.request
            assert request is not None  # set by _fast before the relay starts
            try:
                body = _restaged_json(self.listener.stage, request, status, b"".join(held.body))
                if body is not None:
                    response = response or held.head(limits.max_head)
                    if response is None:
                        raise ProtocolError("daemon answer head does not parse")
                    out = serialise_response_head(response, content_length=len(body)) + body
            except Exception:  # fail closed: the unfiltered answer is never sent
                log.exception("rewriting the answer to connection %d failed", record.conn_id)
                self._finish(keep=False, reusable=False)
                return
        record.bytes_out += len(out)
        self.writer.write(out)
        keep = held.keep_alive
        head = record.head
        self._finish(keep=head is not None and head.keep_alive and keep, reusable=keep)

    def _fail(self) -> None:
        if self.record.status == 0:
            # Nothing of the answer was relayed: the task sends the request again.
            self.done = True
            self.gateway.pool.release(self.conn, False)
            self._unbusy()
            stream = self.stream
            stream.relay = None
            stream.bytes_counted -= self.record.bytes_in  # audited with the retry instead
            stream.events.extend(self.events)
            stream.wake()
            return
        self._finish(keep=False, reusable=False)

    def _hand_over(self, data: bytes) -> None:
        """An error answer the stage rewrites: the event path takes it in a task."""
        self.done = True
        self.conn.protocol.sink = None
        request = self.record.request
        head = self.record.head
        assert request is not None and head is not None

        async def relay() -> None:
            keep = reusable = False
            try:
                keep, reusable = await self.gateway._relay_events(
                    self.listener, self.stream, self.writer, self.conn, self.record, head,
                    request, data,
                )  # fmt: skip
            except (_Abort, ConnectionError, OSError, UpstreamError):
                pass
            except Exception:
                log.exception("relaying an answer to connection %d failed", self.record.conn_id)
            finally:
                self.done = False
                self._finish(keep=keep, reusable=reusable)

        self.gateway._spawn(relay())

    def client_paused(self, paused: bool) -> None:
        """The client reads slower than the daemon sends: stop reading the daemon."""
        if paused == self.paused:
            return
        self.paused = paused
        transport = cast(asyncio.Transport, self.conn.writer.transport)
        with contextlib.suppress(Exception):
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def client_gone(self) -> None:
        if not self.done:
            self._finish(keep=False, reusable=False)

    def _finish(self, *, keep: bool, reusable: bool) -> None:
        if self.done:
            return
        self.done = True
        self.conn.protocol.sink = None
        self.client_paused(False)  # a pooled connection must be readable again
        self.gateway.pool.release(self.conn, reusable)
        self.gateway._close_record(self.record)
        self._unbusy()
        self.stream.relay_done(keep)

    def _unbusy(self) -> None:
        task = self.stream.task
        if task is not None:
            self.gateway._busy.discard(task)


class _Abort(Exception):
    """Close the client connection now (the reason is already answered or logged)."""


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
        stage: Any = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.default_stage = stage
        self.limits = settings.limits
        self.pool = UpstreamPool(settings.upstream, settings.limits)
        self.upstream = PooledUpstream(self.pool, settings.limits.max_json_response)
        self.audit = audit or AuditLog(settings.audit_log)
        self.listeners: dict[str, Listener] = {}
        self._ids = itertools.count(1)
        self._busy: set[asyncio.Task[None]] = set()
        self._spawned: set[asyncio.Task[None]] = set()
        self._draining = False

    # --- listeners ---

    async def add_listener(
        self, listener: ListenerSettings, *, policy: Policy | None = None, stage: Any = None
    ) -> None:
        """Start listening; `policy`/`stage` override the gateway's for this listener."""
        url = listener.endpoint.url
        if url in self.listeners:
            raise ConfigError(f"already listening on {url}")
        stage = stage if stage is not None else self.default_stage
        on_request = bind_on_request(stage) if stage is not None else None
        holder: dict[str, Listener] = {}
        loop = asyncio.get_running_loop()

        def start(protocol: _ClientProtocol, transport: asyncio.Transport) -> _ClientStream:
            entry = holder["listener"]
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
            conn_id = next(self._ids)
            client = _identity(entry.settings, writer)

            lane = _Lane(self, entry, conn_id, client, writer)
            stream = _ClientStream(transport, self.limits.max_head, self.limits.head_timeout, lane)
            task = loop.create_task(self._serve_client(entry, conn_id, client, stream, writer))
            stream.task = task
            entry.connections.add(task)
            task.add_done_callback(entry.connections.discard)
            return stream

        def protocol() -> _ClientProtocol:
            return _ClientProtocol(start)

        endpoint = listener.endpoint
        if endpoint.kind == "unix":
            sock = _unix_socket(endpoint, self.settings.socket_group)
            server = await loop.create_unix_server(protocol, sock=sock, backlog=1024)
        else:
            assert endpoint.port is not None
            server = await loop.create_server(
                protocol,
                endpoint.host,
                endpoint.port,
                ssl=_server_tls(endpoint),
                reuse_address=True,
                backlog=1024,
            )
        holder["listener"] = Listener(listener, server, policy, on_request, stage)
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

    async def start(self) -> None:
        self.audit.open()
        for listener in self.settings.listeners:
            await self.add_listener(listener)

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let requests in flight finish within the grace period."""
        self._draining = True
        for entry in self.listeners.values():
            entry.server.close()
            _remove_socket(entry.settings)
        idle = [
            task for entry in self.listeners.values() for task in entry.connections
            if task not in self._busy
        ]  # fmt: skip
        for task in idle:
            task.cancel()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=self.limits.drain_grace)
        for entry in self.listeners.values():
            for task in list(entry.connections):
                task.cancel()
        for task in list(self._spawned):
            task.cancel()
        self.listeners.clear()
        self.pool.close()
        await self.audit.close()

    # --- one client connection ---

    async def _serve_client(
        self,
        listener: Listener,
        conn_id: int,
        client: ClientIdentity,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = stream.task
        try:
            while not self._draining:
                try:
                    event = await stream.next_event(self.limits.idle_timeout)
                except TimeoutError:
                    break
                if event is None:
                    break
                if task is not None:
                    self._busy.add(task)
                try:
                    keep = await self._exchange(listener, conn_id, client, stream, event, writer)
                finally:
                    if task is not None:
                        self._busy.discard(task)
                if not keep:
                    break
        except (_Abort, ConnectionError, OSError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("connection %d failed", conn_id)
        finally:
            stream.close()
            if stream.relay is not None:
                stream.relay.client_gone()
            if stream.linger:
                await _linger(stream, writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _exchange(
        self,
        listener: Listener,
        conn_id: int,
        client: ClientIdentity,
        stream: _ClientStream,
        event: RequestEvent,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Handle one request; True when the client connection stays open."""
        record = _Exchange(conn_id, client)
        try:
            if (
                isinstance(event, RequestHead)
                and not event.has_body
                and not event.upgrade
                and event.method != "HEAD"
                and stream.events
                and isinstance(stream.events[0], MessageEnd)
            ):
                keep = await self._plain(listener, stream, event, writer, record)
            else:
                keep = await self._handle(listener, stream, event, writer, record)
        finally:
            record.bytes_in += stream.take_bytes_in()
            self._close_record(record)
        return keep

    def _close_record(self, record: _Exchange) -> None:
        """The request is over: its audit entry, and a log line for denials and 5xx."""
        if self.audit.enabled:
            self.audit.record(record.entry(self.audit.stamp()))
        if record.status >= 500 or record.decision == "deny":
            log.info(
                "%s %s -> %d %s %s",
                record.head.method if record.head else "-",
                record.head.target if record.head else "-",
                record.status,
                record.decision,
                record.rule or "",
            )

    # --- the fast lane ---

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fast-lane continuation as a task (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def _fast(
        self,
        lane: _Lane,
        stream: _ClientStream,
        events: list[RequestEvent],
        whole: bytes | None,
    ) -> bool:
        """A complete bodiless request, handled from the client's read callback.

        The usual CI call (a list, an inspect, a ping, a start, `logs -f`) costs here
        no task wake-up, no coroutine and no stream buffer. Taken only when all of it
        is synchronous: an idle pooled daemon connection, a stage that decides this
        route without looking anything up, and an answer relayed as is. Otherwise
        False, before anything was sent: the connection's task then handles the
        request the ordinary way, deciding it afresh. The decision point is the same
        (`pipeline.plan` and `pipeline.decide`).

        `whole` is the read, when it held exactly this request: a forwarded GET is
        then remembered for the connection's next identical read (`_again`).
        """
        if len(events) != 2 or self._draining:
            return False
        listener = lane.listener
        client = lane.client
        head, end = events
        if (
            not isinstance(head, RequestHead)
            or not isinstance(end, MessageEnd)
            or head.has_body
            or head.upgrade
            or head.method == "HEAD"
        ):
            return False
        policy = listener.policy or self.policy
        stage = listener.stage
        try:
            planned = pipeline.plan(head, client, policy)
        except ProtocolError:
            return False  # the task answers the 400
        request = planned.request
        # From here, a refusal hands the routed request to the task (`_plain`), which
        # then does not route it again.
        stream.planned = planned
        if planned.form or request.route.name in HIJACKING:
            return False
        kind = response_kind(stage, request) if stage is not None else "none"
        if kind not in ("none", "json") or (
            stage is not None and not decides_inline(stage, request)
        ):
            return False
        conn = self.pool.take_idle()
        if conn is None:
            return False  # connecting needs the task
        stream.planned = None
        try:
            outcome = _run_inline(
                pipeline.decide(request, policy, listener.on_request, self.upstream, form=False)
            )
            if outcome is None or outcome.body is not None:
                self.pool.release(conn, True)
                return False
            decision = outcome.decision
            upstream_head = None
            if not isinstance(decision, Deny):
                upstream_head = serialise_request_head(
                    head, outcome.target, content_length=None, chunked=False
                )
                errors_rewritten = stage is not None and error_kind(stage, request)
        except Exception:  # noqa: BLE001 - fail closed: nothing sent; the task reports it
            self.pool.release(conn, False)
            return False
        record = _Exchange(lane.conn_id, client, head=head, request=outcome.request)
        record.decision = pipeline.describe(decision)
        record.rule = decision.rule
        record.notes = pipeline.notes_of(outcome)
        record.bytes_in = stream.take_bytes_in()
        writer = lane.writer
        if upstream_head is None:
            assert isinstance(decision, Deny)
            self.pool.release(conn, True)
            answer = error_response(decision.status, decision.message,
                                    keep_alive=head.keep_alive)  # fmt: skip
            record.status = decision.status
            record.bytes_out = len(answer)
            writer.write(answer)
            self._close_record(record)
            stream.relay_done(head.keep_alive)
            return True
        if whole is not None and head.method == "GET" and head.keep_alive:
            state = inline_state(stage, client) if stage is not None else None
            if stage is None or state is not None:
                remembered = stream.remembered
                if remembered is None or len(remembered) >= _REMEMBERED_PER_CONNECTION:
                    remembered = stream.remembered = {}
                remembered[whole] = _Remembered(
                    (head, events[1]), head, outcome.request, upstream_head, record.decision,
                    decision.rule, record.notes, kind == "json", errors_rewritten, policy, state,
                )  # fmt: skip
        self._send_fast(lane, stream, conn, record, events, upstream_head,
                        errors_rewritten, kind == "json")  # fmt: skip
        return True

    def _again(self, lane: _Lane, stream: _ClientStream, known: _Remembered) -> bool:
        """A read identical to one already decided on this connection: the same request,
        sent again without parsing, routing or deciding it again. False (nothing sent,
        the read is then parsed) when the policy or the client's stage state changed
        since, or no idle daemon connection is at hand.
        """
        listener = lane.listener
        stage = listener.stage
        if (
            self._draining
            or known.policy is not (listener.policy or self.policy)
            or (stage is not None and inline_state(stage, lane.client) != known.state)
        ):
            stream.remembered = None  # stale: decided afresh from now on
            return False
        conn = self.pool.take_idle()
        if conn is None:
            return False
        record = _Exchange(lane.conn_id, lane.client, head=known.head, request=known.request)
        record.decision = known.decision
        record.rule = known.rule
        record.notes = known.notes
        record.bytes_in = stream.take_bytes_in()
        self._send_fast(lane, stream, conn, record, known.events, known.upstream_head,
                        known.errors_rewritten, known.json)  # fmt: skip
        return True

    def _send_fast(
        self,
        lane: _Lane,
        stream: _ClientStream,
        conn: _Conn,
        record: _Exchange,
        events: Sequence[RequestEvent],
        upstream_head: bytes,
        errors_rewritten: bool,
        json_answer: bool,
    ) -> None:
        relay = _FastRelay(self, lane.listener, stream, lane.writer, conn, record, events,
                           errors_rewritten, json_answer)  # fmt: skip
        # Nothing below can fail: once the daemon has the request, the task must never
        # be handed it again.
        conn.writer.write(upstream_head)
        conn.protocol.sink = relay
        stream.relay_started(relay)
        if stream.task is not None:
            self._busy.add(stream.task)

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        record: _Exchange,
        status: int,
        message: str,
        *,
        keep_alive: bool,
    ) -> bool:
        head_only = record.head is not None and record.head.method == "HEAD"
        data = error_response(status, message, keep_alive=keep_alive, head_only=head_only)
        record.status = status
        record.bytes_out += len(data)
        writer.write(data)
        await writer.drain()
        return keep_alive

    async def _plain(
        self,
        listener: Listener,
        stream: _ClientStream,
        head: RequestHead,
        writer: asyncio.StreamWriter,
        record: _Exchange,
    ) -> bool:
        """A whole bodiless request (most of what a CI job sends), in one flat coroutine.

        The same decision point as _handle; answers the stage rewrites, hijacks and
        rewritten bodies go on through _forward. Flat because this is the gateway's
        per-request cost: each coroutine layer and event costs more than llhttp's parse.
        """
        record.head = head
        policy = listener.policy or self.policy
        planned = stream.planned
        stream.planned = None
        try:
            if planned is None or planned.request.raw_target is not head.target:
                planned = pipeline.plan(head, record.client, policy)
        except ProtocolError as error:
            record.decision = "refused"
            return await self._answer(writer, record, 400, f"dockmoat: bad request: {error}",
                                      keep_alive=False)  # fmt: skip
        stream.events.popleft()  # the request's end (no body)
        record.request = planned.request
        outcome = await pipeline.decide(
            planned.request, policy, listener.on_request, self.upstream, form=planned.form
        )
        request = outcome.request
        decision = outcome.decision
        record.request = request
        record.decision = pipeline.describe(decision)
        record.rule = decision.rule
        record.notes = pipeline.notes_of(outcome)
        if isinstance(decision, Deny):
            return await self._answer(writer, record, decision.status, decision.message,
                                      keep_alive=head.keep_alive)  # fmt: skip
        stage = listener.stage
        if (
            outcome.body is not None
            or request.route.name in HIJACKING
            or (stage is not None and response_kind(stage, request) != "none")
        ):
            return await self._forward(listener, stream, writer, record, head, planned, outcome)
        errors_rewritten = stage is not None and error_kind(stage, request)
        upstream_head = serialise_request_head(
            head, outcome.target, content_length=head.content_length, chunked=False
        )
        for attempt in (1, 2):
            try:
                conn = self.pool.take_idle() or await self.pool.acquire()
            except UpstreamError as error:
                return await self._answer(writer, record, 502, f"dockmoat: {error}",
                                          keep_alive=head.keep_alive)  # fmt: skip
            reusable = False
            try:
                conn.writer.write(upstream_head)
                keep, reusable = await self._relay_raw(
                    listener, stream, writer, conn, record, head, request, errors_rewritten
                )
                return keep
            except (ConnectionError, OSError, UpstreamError) as error:
                if record.status == 0 and conn.reused and attempt == 1:
                    self.pool.close()
                    continue
                if record.status == 0:
                    return await self._answer(writer, record, 502,
                                              f"dockmoat: upstream failed: {error}",
                                              keep_alive=False)  # fmt: skip
                raise _Abort from error
            finally:
                self.pool.release(conn, reusable)
        raise _Abort

    async def _handle(
        self,
        listener: Listener,
        stream: _ClientStream,
        event: RequestEvent,
        writer: asyncio.StreamWriter,
        record: _Exchange,
    ) -> bool:
        if isinstance(event, Invalid):
            record.decision = "refused"
            await self._answer(writer, record, 400, f"dockmoat: bad request: {event.reason}",
                               keep_alive=False)  # fmt: skip
            return False
        if not isinstance(event, RequestHead):
            raise _Abort
        head = event
        record.head = head
        policy = listener.policy or self.policy
        stage = listener.stage
        stage_body_needed = getattr(stage, "body_needed", None) if stage is not None else None
        try:
            planned = pipeline.plan(head, record.client, policy, stage_body_needed)
        except ProtocolError as error:
            record.decision = "refused"
            return await self._answer(writer, record, 400, f"dockmoat: bad request: {error}",
                                      keep_alive=False)  # fmt: skip
        record.request = planned.request
        request = planned.request
        body_consumed = planned.body_plan == "none"
        if head.header("expect") is not None and planned.body_plan == "buffer":
            # The body is needed for the decision; a streamed body is asked for only
            # once the request is allowed (in _forward).
            writer.write(_CONTINUE)
        if planned.body_plan == "buffer":
            try:
                if (head.content_length or 0) > self.limits.max_body:
                    stream.linger = True
                    raise BodyTooLarge(
                        f"request body larger than {self.limits.max_body} bytes "
                        "(the limit for bodies that are inspected)"
                    )
                body = await self._read_body(stream)
                request = pipeline.with_body(planned, body)
            except BodyTooLarge as error:
                stream.linger = True
                record.decision = "refused"
                return await self._answer(writer, record, 413, f"dockmoat: {error}",
                                          keep_alive=False)  # fmt: skip
            except ProtocolError as error:
                record.decision = "refused"
                return await self._answer(writer, record, 400, f"dockmoat: bad request: {error}",
                                          keep_alive=False)  # fmt: skip
            body_consumed = True
            record.request = request
        elif planned.body_plan == "none":
            events = stream.events
            if events and isinstance(events[0], MessageEnd):
                events.popleft()  # the usual case: the end came in the same read as the head
            else:
                await self._expect_end(stream)

        outcome = await pipeline.decide(
            request, policy, listener.on_request, self.upstream, form=planned.form
        )
        record.request = outcome.request
        record.decision = pipeline.describe(outcome.decision)
        record.rule = outcome.decision.rule
        record.notes = pipeline.notes_of(outcome)
        if isinstance(outcome.decision, Deny):
            stream.linger = not body_consumed
            return await self._answer(
                writer,
                record,
                outcome.decision.status,
                outcome.decision.message,
                keep_alive=body_consumed and head.keep_alive and not head.upgrade,
            )
        return await self._forward(listener, stream, writer, record, head, planned, outcome)

    async def _read_body(self, stream: _ClientStream) -> bytes:
        body = bytearray()
        while True:
            event = await stream.next_event(None)
            if isinstance(event, BodyData):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise BodyTooLarge(
                        f"request body larger than {self.limits.max_body} bytes "
                        "(the limit for bodies that are inspected)"
                    )
            elif isinstance(event, MessageEnd):
                return bytes(body)
            elif isinstance(event, Invalid):
                raise ProtocolError(event.reason)
            else:
                raise ProtocolError("request body could not be read completely")

    async def _expect_end(self, stream: _ClientStream) -> None:
        event = await stream.next_event(None)
        if not isinstance(event, MessageEnd):
            raise _Abort

    async def _forward(
        self,
        listener: Listener,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        record: _Exchange,
        head: RequestHead,
        planned: pipeline.Planned,
        outcome: pipeline.Outcome,
    ) -> bool:
        streaming = planned.body_plan == "stream"
        body = outcome.body
        if body is None and planned.body_plan == "buffer":
            body = outcome.request.body_raw or b""
        if body is not None:
            upstream_head = serialise_request_head(
                head, outcome.target, content_length=len(body), chunked=False
            )
        elif streaming:
            upstream_head = serialise_request_head(
                head, outcome.target, content_length=head.content_length, chunked=head.chunked
            )
        else:
            upstream_head = serialise_request_head(
                head, outcome.target, content_length=head.content_length, chunked=False
            )
        for attempt in (1, 2):
            try:
                conn = await self.pool.acquire()
            except UpstreamError as error:
                return await self._answer(writer, record, 502, f"dockmoat: {error}",
                                          keep_alive=not streaming and head.keep_alive)  # fmt: skip
            reusable = False
            pump: asyncio.Task[None] | None = None
            try:
                conn.writer.write(upstream_head + (body or b""))
                if streaming:
                    if head.header("expect") is not None:
                        writer.write(_CONTINUE)
                    pump = asyncio.create_task(self._pump_body(stream, conn.writer, head.chunked))
                else:
                    await conn.writer.drain()
                keep, reusable = await self._relay_response(
                    listener, stream, writer, conn, record, head, outcome.request
                )
                if pump is not None:
                    if not pump.done():
                        # The daemon answered before taking the whole body: the framing
                        # of the client's stream is lost; close both sides.
                        pump.cancel()
                        reusable = False
                        keep = False
                    else:
                        pump.result()
                return keep
            except (ConnectionError, OSError, UpstreamError) as error:
                if record.status == 0 and conn.reused and not streaming and attempt == 1:
                    # A pooled connection the daemon had closed (e.g. it restarted):
                    # nothing was received, so the request can go on a fresh one.
                    self.pool.close()
                    continue
                if record.status == 0:
                    return await self._answer(
                        writer,
                        record,
                        502,
                        f"dockmoat: upstream failed: {error}",
                        keep_alive=False,
                    )
                raise _Abort from error
            finally:
                if pump is not None and not pump.done():
                    pump.cancel()
                self.pool.release(conn, reusable)
        raise _Abort

    async def _pump_body(
        self, stream: _ClientStream, upstream: asyncio.StreamWriter, chunked: bool
    ) -> None:
        while True:
            event = await stream.next_event(None)
            if isinstance(event, BodyData):
                upstream.write(chunk(event.data) if chunked else event.data)
                await upstream.drain()
            elif isinstance(event, MessageEnd):
                if chunked:
                    upstream.write(LAST_CHUNK)
                    await upstream.drain()
                return
            else:
                # Truncated or malformed body: the daemon must not run a partial request.
                upstream.close()
                raise _Abort

    async def _relay_response(
        self,
        listener: Listener,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        record: _Exchange,
        head: RequestHead,
        request: ApiRequest,
    ) -> tuple[bool, bool]:
        """Relay one answer; (client connection stays open, upstream reusable)."""
        stage = listener.stage
        # Answers nobody rewrites are relayed byte for byte with the daemon's own framing
        # (no re-chunking, no copies); the parser only finds where the answer ends.
        # Hijacks keep the event path: their raw part starts exactly after the 101.
        if (
            head.method != "HEAD"
            and not head.upgrade
            and request.route.name not in HIJACKING
            and (stage is None or response_kind(stage, request) == "none")
        ):
            errors_rewritten = stage is not None and error_kind(stage, request)
            return await self._relay_raw(
                listener, stream, writer, conn, record, head, request, errors_rewritten
            )
        data = await conn.reader.read(READ_SIZE)
        return await self._relay_events(listener, stream, writer, conn, record, head, request, data)

    async def _relay_raw(
        self,
        listener: Listener,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        record: _Exchange,
        head: RequestHead,
        request: ApiRequest,
        errors_rewritten: bool,
    ) -> tuple[bool, bool]:
        """The common case, kept lean: relay the daemon's bytes as read."""
        answer = RawAnswer(max_head=self.limits.max_head, rewrite_errors=errors_rewritten)
        while True:
            data = await conn.reader.read(READ_SIZE)
            step = answer.feed(data)
            if step.broken is not None:
                if step.status == 0:
                    raise UpstreamError(step.broken)  # nothing relayed yet: 502
                raise _Abort
            if step.hand_over:
                # The stage rewrites this error answer: the event path takes over from
                # the first byte (nothing was relayed yet).
                return await self._relay_events(
                    listener, stream, writer, conn, record, head, request, step.send
                )
            record.status = step.status
            if step.send:
                record.bytes_out += len(step.send)
                writer.write(step.send)
                transport = writer.transport
                if transport.get_write_buffer_size() or transport.is_closing():
                    # Backpressure when the client is behind; an error when it is gone.
                    await writer.drain()
            if step.end:
                return head.keep_alive and step.keep_alive, step.keep_alive
            if not data:
                return False, False

    async def _relay_events(
        self,
        listener: Listener,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        record: _Exchange,
        head: RequestHead,
        request: ApiRequest,
        data: bytes,
    ) -> tuple[bool, bool]:
        """Answers the stage rewrites, hijacks, and heads split over reads, event by event.

        `data` is the daemon's answer so far (b"": it closed), from its first byte.
        """
        reader = ResponseReader(head_request=head.method == "HEAD", max_head=self.limits.max_head)
        response: ResponseHead | None = None
        kind: ResponseKind | Literal["lines_at_end"] = "none"
        lines = bytearray()
        buffered = bytearray()
        stage = listener.stage
        # Everything one read from the daemon produces goes to the client in one write
        # (one syscall instead of head, body and chunk trailer separately).
        pending: list[bytes] = []

        async def flush() -> None:
            if pending:
                out = b"".join(pending)
                pending.clear()
                await self._write(writer, record, out)

        first = True
        while True:
            if not first:
                data = await conn.reader.read(READ_SIZE)
            first = False
            events = reader.feed(data) if data else reader.feed_eof()
            for event in events:
                if isinstance(event, ResponseHead):
                    response = event
                    record.status = event.status
                    if event.status == 101:
                        continue  # written when the switch is confirmed (UpgradeStart)
                    if request.route.name in HIJACKING and event.until_close and not head.upgrade:
                        # dockerd hijacks without an Upgrade header too: 200, then raw.
                        pending.append(serialise_response_head(event))
                        await flush()
                        await self._hijack(stream, writer, conn, record, b"", upgraded=False)
                        return False, False
                    if stage is not None and 200 <= event.status < 300:
                        kind = response_kind(stage, request)
                    elif stage is not None and _json_error(event) and error_kind(stage, request):
                        kind = "json"  # the stage rewrites error messages (tenancy's names)
                    if kind in ("events", "load") and not event.chunked:
                        kind = "lines_at_end" if event.content_length is not None else kind
                    if kind not in ("json", "lines_at_end"):
                        pending.append(serialise_response_head(event))
                elif isinstance(event, BodyData):
                    assert response is not None
                    if kind in ("json", "lines_at_end"):
                        buffered += event.data
                        if len(buffered) > self.limits.max_json_response:
                            raise UpstreamError("daemon answer too large to filter")
                    elif kind in ("events", "load"):
                        lines += event.data
                        out = self._filter_lines(stage, kind, request, lines)
                        if out:
                            pending.append(_frame(response, out))
                    else:
                        pending.append(_frame(response, event.data))
                elif isinstance(event, MessageEnd):
                    if response is None:
                        raise UpstreamError("daemon answer without a head")
                    if kind == "json":
                        body = _restaged_json(stage, request, response.status, bytes(buffered))
                        payload = bytes(buffered) if body is None else body
                        out_head = serialise_response_head(response, content_length=len(payload))
                        pending.append(out_head + payload)
                    elif kind == "lines_at_end":
                        buffered += b"\n"
                        line_kind: ResponseKind = response_kind(stage, request)
                        payload = self._filter_lines(stage, line_kind, request, buffered)
                        out_head = serialise_response_head(response, content_length=len(payload))
                        pending.append(out_head + payload)
                    elif kind in ("events", "load") and lines:
                        lines += b"\n"
                        out = self._filter_lines(stage, kind, request, lines)
                        if out:
                            pending.append(_frame(response, out))
                    if response.chunked and kind != "json" and head.method != "HEAD":
                        pending.append(LAST_CHUNK)
                    if response.status == 101:
                        continue
                    until_close = response.until_close and head.method != "HEAD"
                    client_keep = (
                        head.keep_alive and response.keep_alive and not until_close
                        and not head.upgrade
                    )  # fmt: skip
                    upstream_ok = response.keep_alive and not until_close
                    await flush()
                    return client_keep, upstream_ok
                elif isinstance(event, UpgradeStart):
                    if response is None or response.status != 101:
                        raise UpstreamError("daemon switched protocols without a 101")
                    pending.append(serialise_response_head(response))
                    await flush()
                    await self._hijack(stream, writer, conn, record, event.leftover, upgraded=True)
                    return False, False
                elif isinstance(event, Invalid):
                    if record.status and response is not None:
                        raise _Abort
                    raise UpstreamError(event.reason)
            await flush()
            if not data and reader.done:
                return False, False

    def _filter_lines(
        self, stage: Any, kind: ResponseKind, request: ApiRequest, buffer: bytearray
    ) -> bytes:
        """Complete lines of a JSON stream, each through the stage; the rest stays buffered."""
        end = buffer.rfind(b"\n")
        if end < 0:
            return b""
        complete = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        handler = line_handler(stage, kind)
        out = bytearray()
        for line in complete.splitlines():
            if not line.strip():
                continue
            if handler is None:
                out += line + b"\n"
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue  # fail closed: what cannot be read is not shown
            changed = handler(request, item)
            if changed is not None:
                out += json.dumps(changed, separators=(",", ":")).encode() + b"\n"
        return bytes(out)

    async def _write(self, writer: asyncio.StreamWriter, record: _Exchange, data: bytes) -> None:
        if data:
            record.bytes_out += len(data)
            writer.write(data)
            await writer.drain()

    async def _hijack(
        self,
        stream: _ClientStream,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        record: _Exchange,
        upstream_leftover: bytes,
        *,
        upgraded: bool,
    ) -> None:
        """Raw two-way relay after the daemon switched protocols; no timeouts."""
        pending = [e for e in stream.events if not isinstance(e, UpgradeStart)]
        if pending or (not upgraded and not stream.parser.idle):
            # Bytes the client sent after the request were already read as HTTP.
            raise _Abort
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
            # Half-close: the daemon sees stdin end and still sends the rest of the output.
            if conn.writer.can_write_eof():
                conn.writer.write_eof()

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
        try:
            await down
        finally:
            if not up.done():
                up.cancel()
            with contextlib.suppress(BaseException):
                await up


async def _linger(stream: _ClientStream, writer: asyncio.StreamWriter) -> None:
    """After an early answer, read (and drop) what the client still sends, briefly.

    Closing with unread data makes the kernel reset the connection, and the
    client may lose the answer it has not read yet (the 413 or 403).
    """
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + 2.0
        budget = 64 * 1024 * 1024
        while budget > 0:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            data = await asyncio.wait_for(stream.read_raw(), left)
            if not data:
                break
            budget -= len(data)


def _json_error(response: ResponseHead) -> bool:
    """An error answer in JSON: what a stage that rewrites errors rewrites."""
    return response.status >= 400 and (response.header("content-type") or "").startswith(
        "application/json"
    )


def _restaged_json(stage: Any, request: ApiRequest, status: int, body: bytes) -> bytes | None:
    """A whole JSON answer's body as the stage rewrites it; None when the stage's
    answer equals the daemon's (a filter that removed nothing, e.g. from an empty
    list), so the daemon's own bytes can go as read, not re-encoded."""
    answer = pipeline.json_answer(body)
    changed = stage.on_json_response(request, status, answer)
    if changed is answer or changed == answer:
        return None
    return json.dumps(changed, separators=(",", ":")).encode() + b"\n"


def _frame(response: ResponseHead, data: bytes) -> bytes:
    return chunk(data) if response.chunked else data


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


def socket_path_of(url: str) -> Path | None:
    return Path(url[len("unix://") :]) if url.startswith("unix://") else None


# --- running it -----------------------------------------------------------------------

StartHook = Callable[[Gateway], Awaitable[None]]


async def serve(
    settings: ServeSettings,
    load_policy: Callable[[], Policy],
    *,
    stage: Any = None,
    on_start: StartHook | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (drain, then return); SIGHUP reloads the policy."""
    import signal

    policy = load_policy()
    gateway = Gateway(settings, policy, stage=stage)
    await gateway.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
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
        f" + {settings.policy_file}" if settings.policy_file else "",
    )
    if on_start is not None:
        await on_start(gateway)
    await stop.wait()
    log.info("draining (up to %.0fs)", settings.limits.drain_grace)
    await gateway.drain()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
