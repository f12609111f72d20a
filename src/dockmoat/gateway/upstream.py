"""Connections to the daemon: the keep-alive pool, and small requests for stages.

A daemon connection's bytes feed a StreamReader (the task path), or go straight
to a sink (the fast lane's `FastRelay`, or any `UpstreamSink`) from its read
callback. A stage may also follow a streamed answer (tenancy follows the daemon's
image events) on a connection of its own, which the pool closes when serve stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from dockmoat.api.engines import EngineVersion, from_version_answer
from dockmoat.errors import ProtocolError, UpstreamError
from dockmoat.gateway.config import Endpoint, Limits
from dockmoat.gateway.halfclose import open_tls
from dockmoat.gateway.sansio.http import (
    BodyData,
    Invalid,
    MessageEnd,
    ResponseHead,
    ResponseReader,
    UpgradeStart,
)

READ_SIZE = 256 * 1024


class UpstreamSink(Protocol):
    """Takes a daemon connection's bytes from its read callback (see `UpstreamProtocol`)."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_closed(self) -> None: ...


class UpstreamProtocol(asyncio.StreamReaderProtocol):
    """A daemon connection: its bytes feed a StreamReader, or while `sink` is set
    (the fast lane, see `fastlane.FastRelay`) go straight to it, with no task woken."""

    sink: UpstreamSink | None = None
    eof_seen = False

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.upstream_data(data)
        else:
            super().data_received(data)

    def eof_received(self) -> bool:
        self.eof_seen = True
        if self.sink is not None:
            self.sink.upstream_closed()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink is not None:
            self.sink.upstream_closed()
        # An error after the daemon's clean end (over TLS: answering its close_notify
        # on a half-closed connection, see halfclose) must not hide what it sent.
        super().connection_lost(None if self.eof_seen else exc)


@dataclass(slots=True, eq=False)  # one connection is itself: hashed and compared by identity
class UpstreamConn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: UpstreamProtocol
    reused: bool = False
    # Over TLS, the TCP transport under `writer` (for a hijacked stream's half-close).
    tcp: asyncio.Transport | None = None

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.protocol.sink = None
        with contextlib.suppress(Exception):
            self.writer.close()


def client_tls(endpoint: Endpoint) -> ssl.SSLContext | None:
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
    """Keep-alive connections to the daemon, reused one request at a time.

    `engine` is the daemon's version as last learnt (`/version`, at start and after a
    reconnect: `on_reconnect` is called when a connection succeeds after one failed).
    """

    def __init__(self, endpoint: Endpoint, limits: Limits) -> None:
        self.endpoint = endpoint
        self._limits = limits
        self._idle: deque[UpstreamConn] = deque()
        self._tls = client_tls(endpoint)
        self.engine: EngineVersion | None = None
        self.on_reconnect: Callable[[], None] | None = None
        self._lost = False
        # Connections held by a streamed answer (`PooledUpstream.stream`): closed with
        # the pool, so a follower's stream ends when serve stops.
        self._held: set[UpstreamConn] = set()
        self.closed = False

    def take_idle(self) -> UpstreamConn | None:
        """A pooled connection still open, without awaiting (the common case)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
            # dockerd keeps idle connections open: one it closed means it went away
            # (a restart, perhaps an upgrade), so the next connection relearns its version.
            self._lost = True
            conn.close()
        return None

    async def acquire(self) -> UpstreamConn:
        conn = self.take_idle()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)

        def protocol() -> UpstreamProtocol:
            return UpstreamProtocol(reader, loop=loop)

        async def connect() -> tuple[asyncio.Transport, UpstreamProtocol, asyncio.Transport | None]:
            if self.endpoint.kind == "unix":
                unix = await loop.create_unix_connection(protocol, str(self.endpoint.path))
                return (*unix, None)
            assert self.endpoint.host is not None and self.endpoint.port is not None
            if self._tls is None:
                tcp = await loop.create_connection(protocol, self.endpoint.host, self.endpoint.port)
                return (*tcp, None)
            # TLS on a TCP connection we keep: a hijacked stream half-closes it (halfclose).
            return await open_tls(loop, protocol, self.endpoint.host, self.endpoint.port, self._tls)

        try:
            transport, proto, tcp = await asyncio.wait_for(
                connect(), self._limits.upstream_connect_timeout
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            self._lost = True
            raise UpstreamError(
                f"the Docker daemon at {self.endpoint.url} is not reachable: {error}"
            ) from error
        writer = asyncio.StreamWriter(transport, proto, reader, loop)
        if self._lost:
            self._lost = False
            if self.on_reconnect is not None:
                self.on_reconnect()  # the daemon may have been replaced: learn its version
        return UpstreamConn(reader, writer, proto, tcp=tcp)

    def release(self, conn: UpstreamConn, reusable: bool) -> None:
        if reusable and conn.usable() and len(self._idle) < self._limits.upstream_idle_pool:
            self._idle.append(conn)
        else:
            conn.close()

    def hold(self, conn: UpstreamConn) -> None:
        """A connection a streamed answer keeps (never pooled), closed with the pool."""
        self._held.add(conn)

    def let_go(self, conn: UpstreamConn) -> None:
        self._held.discard(conn)
        conn.close()

    def close(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()
        while self._held:
            self._held.pop().close()


class PooledUpstream:
    """`UpstreamClient` for stages: a small, whole request over the pool."""

    def __init__(self, pool: UpstreamPool, max_body: int) -> None:
        self._pool = pool
        self._max_body = max_body

    @property
    def closed(self) -> bool:
        """The pool was closed (serve stops): no stream opens any more."""
        return self._pool.closed

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

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str) -> AsyncIterator[StreamedAnswer]:
        """A bodiless request whose answer is read as it comes (an events stream), on
        a connection of its own that is never reused; closed when the block ends or the
        pool closes. UpstreamError when the daemon cannot be reached or answers no HTTP."""
        if self._pool.closed:
            raise UpstreamError("the gateway is stopping")
        conn = await self._pool.acquire()
        self._pool.hold(conn)
        try:
            conn.writer.write(f"{method} {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
            await conn.writer.drain()
            reader = ResponseReader(head_request=False)
            head: ResponseHead | None = None
            after: list[object] = []  # what came with the head
            while head is None:
                for event in _stream_events(reader, await conn.reader.read(READ_SIZE)):
                    if head is not None:
                        after.append(event)
                    elif isinstance(event, ResponseHead):
                        head = event
            headers = {k.lower(): v for k, v in head.headers}
            yield StreamedAnswer(head.status, headers, _stream_body(conn, reader, after))
        except OSError as error:
            raise UpstreamError(f"upstream failed: {error}") from error
        finally:
            self._pool.let_go(conn)


@dataclass(frozen=True, slots=True)
class StreamedAnswer:
    """A streamed answer (`PooledUpstream.stream`): its head, and its body as it comes."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]  # ends with the answer; UpstreamError if cut short


def _stream_events(reader: ResponseReader, data: bytes) -> list[object]:
    """A streamed answer's events from one read (b"": the daemon closed)."""
    events: list[object] = list(reader.feed(data) if data else reader.feed_eof())
    if any(isinstance(event, Invalid | UpgradeStart) for event in events):
        raise UpstreamError("unexpected upstream answer on a stream")
    if not data and not any(isinstance(event, MessageEnd) for event in events):
        raise UpstreamError("the daemon closed the stream")
    return events


async def _stream_body(
    conn: UpstreamConn, reader: ResponseReader, events: list[object]
) -> AsyncIterator[bytes]:
    while True:
        for event in events:
            if isinstance(event, BodyData):
                yield event.data
            elif isinstance(event, MessageEnd):
                return
        try:
            events = _stream_events(reader, await conn.reader.read(READ_SIZE))
        except OSError as error:
            raise UpstreamError(f"upstream failed: {error}") from error


async def learn_engine(pool: UpstreamPool, upstream: PooledUpstream) -> EngineVersion:
    """Ask the daemon's `/version` and keep it on the pool; UpstreamError when it cannot."""
    status, _headers, body = await upstream.request("GET", "/version")
    if status != 200:
        raise UpstreamError(f"the daemon answered /version with HTTP {status}")
    try:
        engine = from_version_answer(body)
    except ValueError as error:
        raise UpstreamError(str(error)) from error
    pool.engine = engine
    return engine
