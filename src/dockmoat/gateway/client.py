"""A client connection: its bytes parsed into requests, its flow control, its identity.

`ClientStream` feeds the connection's task (`Gateway._serve_client`), or offers a
complete bodiless request to the fast lane first (`fastlane.take`/`fastlane.again`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from asyncio.streams import FlowControlMixin
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from dockmoat.api.request import ClientIdentity
from dockmoat.gateway import fastlane
from dockmoat.gateway.config import ListenerSettings
from dockmoat.gateway.sansio.http import (
    Invalid,
    RequestEvent,
    RequestReader,
    UpgradeStart,
)
from dockmoat.gateway.upstream import READ_SIZE
from dockmoat.tenancy.names import certificate_cn

if TYPE_CHECKING:
    from dockmoat.gateway.fastlane import FastRelay, Lane, Remembered
    from dockmoat.gateway.sansio.request import Command, RequestExchange

log = logging.getLogger("dockmoat.gateway")

_PEERCRED = struct.Struct("3i")


class ClientStream:
    """A client connection's bytes, parsed into request events for its task.

    Fed by `ClientProtocol`. While the task waits for the next request and
    nothing is buffered (`lane_open`), a complete bodiless request is offered to
    the fast lane first (`fastlane.take`), which handles it synchronously from
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
        lane: Lane | None,
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
        self.relay: FastRelay | None = None  # the fast-lane exchange in flight
        # An exchange the fast lane began and left to the task (see `hand_over`).
        self._handed: tuple[RequestExchange, Command] | None = None
        # Fast-lane decisions of this connection, by the exact bytes of the read that
        # carried the request (see `fastlane.Remembered`); made with the first one.
        self.remembered: dict[bytes, Remembered] | None = None
        self.unrepeated = 0  # fast-lane requests taken since one was sent again
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
        self._gone: asyncio.Future[None] | None = None  # see `gone`

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
                        if fastlane.again(lane, self, known):
                            return
                    except Exception:  # nothing was sent: parsed and decided afresh below
                        log.exception("fast lane failed; the request is decided afresh")
            events = parser.feed(data)
            # The read held exactly one request, from a boundary to a boundary.
            whole = data if fresh and parser.at_boundary else None
            try:
                taken = fastlane.take(lane, self, events, whole)
            except Exception:  # a bug in the fast lane must not lose the request
                log.exception("fast lane failed; the connection's task takes the request")
                taken = False
            if taken:
                return  # handled (or in flight) without the task
            if self._handed is None:  # (else the task goes on with the exchange begun)
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
        self._left()
        if self.relay is None:
            self.wake()

    def connection_lost(self) -> None:
        self.eof = True
        self._left()
        if self.relay is not None:
            self.relay.client_gone()
        self.wake()

    def _left(self) -> None:
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    def gone(self) -> asyncio.Future[None]:
        """Done once the client has closed its side (EOF) or the connection is lost:
        what a relay that may write nothing for a long time (a tenant's filtered events)
        waits on beside the daemon, as dockerd (Go's net/http) ends a stream on EOF."""
        if self._gone is None:
            self._gone = self._loop.create_future()
            if self.eof:
                self._gone.set_result(None)
        return self._gone

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
            if self._handed is not None:
                return None  # the fast lane left an exchange to the task: `take_handed`
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

    def hand_over(self, exchange: RequestExchange, command: Command) -> None:
        """The fast lane began `exchange` and cannot carry out `command` at once: the
        connection's task goes on with it from that command (woken here)."""
        self._handed = (exchange, command)
        self.wake()

    def take_handed(self) -> tuple[RequestExchange, Command] | None:
        handed, self._handed = self._handed, None
        return handed

    def relay_started(self, relay: FastRelay) -> None:
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


class ClientProtocol(FlowControlMixin, asyncio.Protocol):
    """A client connection: its bytes go to its `ClientStream`; its task serves it.

    FlowControlMixin gives `StreamWriter.drain` its backpressure, so the request
    handling writes through an ordinary StreamWriter.
    """

    def __init__(
        self,
        start: Callable[[ClientProtocol, asyncio.Transport], ClientStream],
    ) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self._start = start
        self.stream: ClientStream | None = None
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


def client_identity(listener: ListenerSettings, writer: asyncio.StreamWriter) -> ClientIdentity:
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


async def linger(stream: ClientStream, writer: asyncio.StreamWriter) -> None:
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
