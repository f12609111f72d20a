"""The connection driver without an engine: a real `Gateway` between a test client and a
scripted daemon that records exactly what it receives and answers what the test says.

Each test checks bytes on both sides: what the client gets (byte for byte where the
answer is relayed as the daemon framed it) and what the daemon gets (which requests,
on which of its connections, in which order relative to its own answers). They cover
what issue 20 asks of the driver: the fast-path choice, pipelining, 100-continue, the
hijack hand-over, retries on a dead pooled connection, keep-alive and draining.

The fast-path choice is observed at its decision point, `fastlane.take` (called from
the client connection's read callback; True when it took the request): the one place
where "handled without the connection's task" is visible from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockmoat.api.request import ApiRequest, Route
from dockmoat.gateway import fastlane
from dockmoat.gateway.client import ClientStream
from dockmoat.gateway.config import Limits
from dockmoat.gateway.sansio.http import RequestEvent, RequestHead
from dockmoat.gateway.sansio.request import Command, RequestExchange
from dockmoat.gateway.server import Gateway
from dockmoat.gateway.stages import PermissivePolicy, Policy
from dockmoat.policy.decision import Allow, Decision
from support.audit_file import settled_entries
from support.serve_settings import settings

pytestmark = pytest.mark.timeout(20)

WAIT = 2.0  # seconds any single read may take before the test fails
VERSION = b'{"Version":"27.0.0","ApiVersion":"1.45","MinAPIVersion":"1.24"}'
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
UPGRADED = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)
# dockerd's answer to `HEAD .../archive`: a 200 with no Content-Length (the `docker cp` bug).
PATH_STAT = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"X-Docker-Container-Path-Stat: eyJuYW1lIjoiLyJ9\r\n\r\n"
)
CREATE_BODY = b'{"Image":"busybox","Cmd":["true"]}'


def ok(body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra, len(body), body)
    )


def seen_body(line: str) -> bytes:
    """The default answer's body: it names the request it answers."""
    return json.dumps({"seen": line}).encode() + b"\n"


def get(target: str, *extra: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: docker\r\n%s\r\n" % (target.encode(), b"".join(extra))


def head_request(target: str, *extra: bytes) -> bytes:
    return b"HEAD %s HTTP/1.1\r\nHost: docker\r\n%s\r\n" % (target.encode(), b"".join(extra))


def post(target: str, body: bytes, *extra: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n%s" % (
        target.encode(),
        b"".join(extra),
    ) + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


ATTACH = (
    b"POST /v1.45/containers/c1/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\nHost: docker\r\n"
    b"Content-Type: text/plain\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)


# --- the scripted daemon ------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the daemon read it, on its `conn`-th connection (1 = the first)."""

    conn: int
    head: bytes
    body: bytes

    @property
    def line(self) -> str:
        """The "METHOD target" of the request line."""
        return self.head.split(b"\r\n", 1)[0].rsplit(b" ", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode()
        return None


@dataclass(frozen=True)
class Reply:
    """What the daemon does with one request: after `delay`, write `pieces` (`gap`
    apart); then close (`close`; with no pieces: closed without an answer), or relay
    raw bytes back upper-cased until the gateway's EOF, then write b"bye\\n" (`echo`)."""

    pieces: tuple[bytes, ...] = ()
    delay: float = 0.0
    gap: float = 0.0
    close: bool = False
    echo: bool = False


Script = Callable[[Seen], Reply]


def answer_all(seen: Seen) -> Reply:
    """The default: /version as an engine; any other request a 200 that names it
    (HEAD: the archive's path stat, no Content-Length, as dockerd answers it)."""
    if seen.line == "GET /version":
        return Reply((ok(VERSION),))
    if seen.line.startswith("HEAD "):
        return Reply((PATH_STAT,))
    return Reply((ok(seen_body(seen.line)),))


def version_then_close(script: Script = answer_all) -> Script:
    """`script`, but /version is answered with `Connection: close`: no idle pooled
    connection is left after start-up."""

    def answer(seen: Seen) -> Reply:
        if seen.line == "GET /version":
            return Reply((ok(VERSION, extra=b"Connection: close\r\n"),), close=True)
        return script(seen)

    return answer


async def read_body(reader: asyncio.StreamReader, seen: Seen) -> bytes:
    length = seen.header("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    if (seen.header("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return bytes(body)
    return b""


@dataclass
class FakeDaemon:
    """A unix server playing dockerd: logs ("accept" | "recv" | "sent" | "eof" |
    "closed", connection, request line) as things happen. Requests are read as they
    arrive, independently of the answers, so a request sent before the previous
    answer ended shows as "recv" before that answer's "sent"."""

    path: Path
    script: Script = answer_all
    seen: list[Seen] = field(default_factory=list)
    log: list[tuple[str, int, str]] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    handlers: set[asyncio.Task[object]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def close(self) -> None:
        """Stop listening, close every connection, and wait for their handlers to end."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        if self.handlers:
            await asyncio.wait(set(self.handlers), timeout=WAIT)

    def api(self) -> list[Seen]:
        """What reached the daemon, but the gateway's own /version look-ups."""
        return [s for s in self.seen if s.line != "GET /version"]

    def api_log(self) -> list[tuple[str, int, str]]:
        return [e for e in self.log if e[0] in ("recv", "sent") and e[2] != "GET /version"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.writers.add(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        self.log.append(("accept", conn, ""))
        requests: asyncio.Queue[Seen | None] = asyncio.Queue()
        raw: asyncio.Queue[bytes] = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError:
                        self.log.append(("eof", conn, ""))
                        return
                    seen = Seen(conn, head, b"")
                    seen = Seen(conn, head, await read_body(reader, seen))
                    self.seen.append(seen)
                    self.log.append(("recv", conn, seen.line))
                    await requests.put(seen)
                    if seen.header("upgrade") is not None:  # raw bytes from here on
                        while data := await reader.read(65536):
                            await raw.put(data)
                        self.log.append(("eof", conn, ""))
                        return
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                self.log.append(("eof", conn, ""))
            finally:
                await raw.put(b"")
                await requests.put(None)

        reading = asyncio.create_task(read())
        try:
            while (seen := await requests.get()) is not None:
                reply = self.script(seen)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                for i, piece in enumerate(reply.pieces):
                    if i and reply.gap:
                        await asyncio.sleep(reply.gap)
                    writer.write(piece)
                    await writer.drain()
                if reply.pieces:
                    self.log.append(("sent", conn, seen.line))
                if reply.echo:
                    while data := await raw.get():
                        writer.write(data.upper())
                        await writer.drain()
                    writer.write(b"bye\n")  # after the gateway's EOF: the output goes on
                    await writer.drain()
                    break
                if reply.close:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            self.log.append(("closed", conn, ""))
            writer.close()
            self.writers.discard(writer)
            self.handlers.discard(handler)


# --- the client ----------------------------------------------------------------------


class Client:
    """One client connection to the gateway, reading exactly one answer at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path) -> Client:
        return cls(*await asyncio.open_unix_connection(str(path)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False) -> bytes:
        """One answer's bytes as received: its head, and its body as framed."""
        return await asyncio.wait_for(self._answer(head_only), WAIT)

    async def _answer(self, head_only: bool) -> bytes:
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        lowered = head.lower()
        if head_only or status in (101, 204, 304) or 100 <= status < 200:
            return head
        for line in lowered.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return head + await reader.readexactly(int(line.split(b":", 1)[1]))
        if b"transfer-encoding: chunked" in lowered:
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                body += size_line
                size = int(size_line.strip(), 16)
                body += await reader.readexactly(size + 2)
                if size == 0:
                    return head + bytes(body)
        return head + await reader.read()  # until the connection closes

    async def rest(self) -> bytes:
        """Everything the gateway still sends until it closes (fails if it does not)."""
        return await asyncio.wait_for(self.reader.read(), WAIT)

    async def idle(self, seconds: float = 0.1) -> bool:
        """True when nothing arrives, and the connection stays open, for `seconds`."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        assert data == b"", f"unexpected bytes: {data!r}"
        return False

    def close(self) -> None:
        self.writer.close()


# --- the gateway between them ---------------------------------------------------------


@dataclass
class Setup:
    gateway: Gateway
    daemon: FakeDaemon
    sock: Path
    draining: asyncio.Task[None] | None = None

    async def client(self) -> Client:
        return await Client.connect(self.sock)

    def drain(self) -> asyncio.Task[None]:
        """`Gateway.drain` (SIGTERM) started; awaited at the end of the test."""
        self.draining = asyncio.create_task(self.gateway.drain())
        return self.draining


@contextlib.asynccontextmanager
async def gateway_between(
    tmp_path: Path,
    script: Script = answer_all,
    *,
    policy: Policy | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[Setup]:
    """A permissive gateway (audit log: tmp_path/audit.log) in front of a scripted daemon."""
    daemon = FakeDaemon(tmp_path / "d.sock", script)
    await daemon.start()
    sock = tmp_path / "g.sock"
    served = settings(
        listen=[f"unix://{sock}"], upstream=f"unix://{daemon.path}",
        profile="permissive", audit_log=str(tmp_path / "audit.log"),
    )  # fmt: skip
    # A test that fails with a request in flight should not wait drain's default 10 s.
    limits = limits or Limits(drain_grace=0.5)
    served = served.model_copy(update={"limits": limits})
    gateway = Gateway(served, policy or PermissivePolicy())
    await gateway.start()
    setup = Setup(gateway, daemon, sock)
    try:
        yield setup
    finally:
        if setup.draining is not None:
            await setup.draining
        elif not gateway.draining:
            await gateway.drain()
        await daemon.close()


def audited(tmp_path: Path) -> list[tuple[object, ...]]:
    return [
        (e["method"], e["path"], e["status"])
        for e in settled_entries(tmp_path / "audit.log", timeout=2.0)
    ]


@pytest.fixture
def fast_lane(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every call of the fast lane's `take`: ("METHOD target" of the first request in
    the read, True when the fast lane took it)."""
    calls: list[tuple[str, bool]] = []
    take = fastlane.take

    def recording(
        lane: fastlane.Lane, stream: ClientStream, events: list[RequestEvent], whole: bytes | None
    ) -> bool:
        first = next((e for e in events if isinstance(e, RequestHead)), None)
        taken = take(lane, stream, events, whole)
        name = f"{first.method} {first.target}" if first is not None else "-"
        calls.append((name, taken))
        return taken

    monkeypatch.setattr(fastlane, "take", recording)
    return calls


class BodyPolicy:
    """Allows everything, but needs every body: a body is buffered before the decision."""

    def __init__(self) -> None:
        self.bodies: list[bytes | None] = []

    def body_needed(self, route: Route) -> bool:
        return True

    def evaluate(self, request: ApiRequest) -> Decision:
        self.bodies.append(request.body_raw)
        return Allow(rule="test.body")


# --- 1. the fast-path choice ----------------------------------------------------------


def test_the_fast_lane_takes_a_bodiless_get_and_nothing_else(
    tmp_path: Path, fast_lane: list[tuple[str, bool]]
) -> None:
    created = post("/v1.45/containers/create", CREATE_BODY)

    async def scenario() -> None:
        async with gateway_between(tmp_path, lambda s: (
            Reply((UPGRADED,), echo=True) if "attach" in s.line else answer_all(s)
        )) as setup:  # fmt: skip
            client = await setup.client()
            await client.send(get("/v1.45/containers/c1/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/c1/json"))
            await client.send(created)
            assert await client.answer() == ok(seen_body("POST /v1.45/containers/create"))
            await client.send(head_request("/v1.45/containers/c1/archive?path=%2F"))
            assert await client.answer(head_only=True) == PATH_STAT
            await client.send(ATTACH)
            assert await client.answer() == UPGRADED
            client.writer.write_eof()
            assert await client.rest() == b"bye\n"
            client.close()
            daemon = setup.daemon
            assert [s.line for s in daemon.api()] == [
                "GET /v1.45/containers/c1/json",
                "POST /v1.45/containers/create",
                "HEAD /v1.45/containers/c1/archive?path=%2F",
                "POST /v1.45/containers/c1/attach?stream=1&stdin=1&stdout=1",
            ]
            assert daemon.api()[1].body == CREATE_BODY

    asyncio.run(scenario())
    assert dict(fast_lane).get("GET /v1.45/containers/c1/json") is True
    assert [name for name, taken in fast_lane if taken] == ["GET /v1.45/containers/c1/json"]
    assert audited(tmp_path) == [
        ("GET", "/v1.45/containers/c1/json", 200),
        ("POST", "/v1.45/containers/create", 200),
        ("HEAD", "/v1.45/containers/c1/archive?path=%2F", 200),
        ("POST", "/v1.45/containers/c1/attach?stream=1&stdin=1&stdout=1", 101),
    ]


def test_a_get_the_fast_lane_declines_is_answered_and_audited_once(
    tmp_path: Path, fast_lane: list[tuple[str, bool]]
) -> None:
    """No idle daemon connection: the fast lane routes the GET, declines it, and the
    connection's task answers it (once); the next GET finds the connection pooled."""

    async def scenario() -> None:
        async with gateway_between(tmp_path, version_then_close()) as setup:
            client = await setup.client()
            await client.send(get("/v1.45/containers/a/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/a/json"))
            await client.send(get("/v1.45/containers/b/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/b/json"))
            client.writer.write_eof()
            assert await client.rest() == b""  # nothing answered twice
            api = setup.daemon.api()
            assert [s.line for s in api] == [
                "GET /v1.45/containers/a/json",
                "GET /v1.45/containers/b/json",
            ]
            assert api[0].conn == api[1].conn  # the task's daemon connection went to the pool

    asyncio.run(scenario())
    assert fast_lane == [("GET /v1.45/containers/a/json", False),
                         ("GET /v1.45/containers/b/json", True)]  # fmt: skip
    assert audited(tmp_path) == [
        ("GET", "/v1.45/containers/a/json", 200),
        ("GET", "/v1.45/containers/b/json", 200),
    ]


# --- 2. pipelining ----------------------------------------------------------------------


PIPELINES = {
    "two-gets": [get("/v1.45/containers/a/json"), get("/v1.45/containers/b/json")],
    "get-head-post": [
        get("/v1.45/containers/a/json"),
        head_request("/v1.45/containers/a/archive?path=%2F"),
        post("/v1.45/containers/create", CREATE_BODY),
    ],
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipelined_requests_are_forwarded_one_at_a_time_in_order(tmp_path: Path, name: str) -> None:
    requests = PIPELINES[name]

    def slowly(seen: Seen) -> Reply:
        """Answers 50 ms late, the head and the body 50 ms apart."""
        reply = answer_all(seen)
        if seen.line == "GET /version":
            return reply
        whole = reply.pieces[0]
        cut = whole.index(b"\r\n\r\n") + 4 if not seen.line.startswith("HEAD ") else 20
        return Reply((whole[:cut], whole[cut:]), delay=0.05, gap=0.05)

    async def scenario() -> None:
        async with gateway_between(tmp_path, slowly) as setup:
            client = await setup.client()
            await client.send(b"".join(requests))  # one write
            lines = [r.split(b" HTTP/1.1", 1)[0].decode() for r in requests]
            for line in lines:
                if line.startswith("HEAD "):
                    assert await client.answer(head_only=True) == PATH_STAT
                else:
                    assert await client.answer() == ok(seen_body(line))
            assert await client.idle()
            # The daemon got each request only after the previous answer had ended.
            assert [(what, line) for what, _, line in setup.daemon.api_log()] == [
                (what, line) for line in lines for what in ("recv", "sent")
            ]
            assert [s.line for s in setup.daemon.api()] == lines
            bodies = [s.body for s in setup.daemon.api()]
            assert bodies == [CREATE_BODY if r.startswith(b"POST ") else b"" for r in requests]
            client.close()

    asyncio.run(scenario())
    assert [(method, status) for method, _, status in audited(tmp_path)] == [
        (r.split(b" ", 1)[0].decode(), 200) for r in requests
    ]


# --- 3. 100-continue --------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["buffered", "streamed"])
def test_expect_100_continue_is_answered_before_the_body_is_read(
    tmp_path: Path, policy: str
) -> None:
    """`buffered`: the policy needs the body (asked for before the decision);
    `streamed`: the permissive policy streams it (asked for once the daemon is reached).
    Either way the daemon gets the body whole, without an `Expect` header."""
    chosen = BodyPolicy() if policy == "buffered" else PermissivePolicy()
    head, body = post("/v1.45/containers/create", CREATE_BODY,
                      b"Expect: 100-continue\r\n").split(b"\r\n\r\n", 1)  # fmt: skip

    async def scenario() -> None:
        async with gateway_between(tmp_path, policy=chosen) as setup:
            client = await setup.client()
            await client.send(head + b"\r\n\r\n")
            assert await asyncio.wait_for(client.reader.readexactly(len(CONTINUE)), WAIT) == (
                CONTINUE
            )
            assert setup.daemon.api() == []  # no body sent: nothing complete upstream
            await client.send(body)
            assert await client.answer() == ok(seen_body("POST /v1.45/containers/create"))
            (seen,) = setup.daemon.api()
            assert seen.body == CREATE_BODY
            assert seen.header("content-length") == str(len(CREATE_BODY))
            assert seen.header("expect") is None
            assert await client.idle()  # keep-alive, and no second 100 or answer
            client.close()

    asyncio.run(scenario())
    if isinstance(chosen, BodyPolicy):
        assert chosen.bodies == [CREATE_BODY]
    assert audited(tmp_path) == [("POST", "/v1.45/containers/create", 200)]


# --- 4. the hijack hand-over ------------------------------------------------------------


def test_attach_becomes_a_raw_two_way_relay_with_half_close(tmp_path: Path) -> None:
    def attach(seen: Seen) -> Reply:
        if "attach" in seen.line:
            # The daemon's first output comes in the same write as its 101.
            return Reply((UPGRADED + b"hello\n",), echo=True)
        return answer_all(seen)

    async def scenario() -> None:
        async with gateway_between(tmp_path, attach) as setup:
            client = await setup.client()
            await client.send(ATTACH)
            assert await client.answer() == UPGRADED
            read = client.reader
            assert await asyncio.wait_for(read.readexactly(6), WAIT) == b"hello\n"
            (seen,) = setup.daemon.api()
            assert seen.header("upgrade") == "tcp"
            assert seen.header("connection") == "Upgrade"
            for data in (b"ping\n", b"\x00\x01binary\xff\n"):
                await client.send(data)
                assert await asyncio.wait_for(read.readexactly(len(data)), WAIT) == data.upper()
            assert ("eof", seen.conn, "") not in setup.daemon.log
            client.writer.write_eof()  # stdin ends: shutdown(SHUT_WR)
            # The daemon sees EOF and still sends; then the gateway closes the client.
            assert await client.rest() == b"bye\n"
            assert ("eof", seen.conn, "") in setup.daemon.log
            client.close()

    asyncio.run(scenario())
    assert audited(tmp_path) == [
        ("POST", "/v1.45/containers/c1/attach?stream=1&stdin=1&stdout=1", 101)
    ]


# --- 5. retries on a dead pooled connection ---------------------------------------------


def test_a_pooled_connection_the_daemon_closed_is_not_used(tmp_path: Path) -> None:
    def close_after_a(seen: Seen) -> Reply:
        reply = answer_all(seen)
        return Reply(reply.pieces, close=seen.line.endswith("/a/json"))

    async def scenario() -> None:
        async with gateway_between(tmp_path, close_after_a) as setup:
            client = await setup.client()
            await client.send(get("/v1.45/containers/a/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/a/json"))
            await asyncio.sleep(0.05)  # the daemon's close reaches the gateway
            await client.send(get("/v1.45/containers/b/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/b/json"))
            a, b = setup.daemon.api()
            assert b.line == "GET /v1.45/containers/b/json"
            assert b.conn != a.conn
            client.close()

    asyncio.run(scenario())
    assert [status for *_, status in audited(tmp_path)] == [200, 200]


RETRIED = {
    "get (fast lane)": (get("/v1.45/containers/b/json"), "GET /v1.45/containers/b/json"),
    "head (task)": (
        head_request("/v1.45/containers/b/archive?path=%2F"),
        "HEAD /v1.45/containers/b/archive?path=%2F",
    ),
    "buffered post (task)": (
        post("/v1.45/containers/create?name=b", CREATE_BODY),
        "POST /v1.45/containers/create?name=b",
    ),
}


@pytest.mark.parametrize("case", list(RETRIED))
def test_a_reused_connection_that_dies_under_a_request_is_retried_once(
    tmp_path: Path, case: str
) -> None:
    """The daemon closes its pooled connection as the request arrives, answering nothing
    (dockerd closing an idle connection as the gateway reuses it): the request goes
    again on a fresh connection and is answered there, audited once."""
    request, line = RETRIED[case]
    dropped: list[int] = []

    def drop_first_b(seen: Seen) -> Reply:
        if seen.line == line and not dropped:
            dropped.append(seen.conn)
            return Reply(close=True)
        return answer_all(seen)

    async def scenario() -> None:
        async with gateway_between(tmp_path, drop_first_b, policy=BodyPolicy()) as setup:
            client = await setup.client()
            await client.send(get("/v1.45/containers/a/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/a/json"))
            await client.send(request)
            if line.startswith("HEAD "):
                assert await client.answer(head_only=True) == PATH_STAT
            else:
                assert await client.answer() == ok(seen_body(line))
            a, *bs = setup.daemon.api()
            assert [b.line for b in bs] == [line, line]
            assert bs[0].conn == a.conn == dropped[0]  # the pooled one, reused
            assert bs[1].conn != a.conn  # then a fresh one
            assert bs[0].body == bs[1].body == (CREATE_BODY if "post" in case else b"")
            answered = [e for e in setup.daemon.api_log() if e[0] == "sent" and e[2] == line]
            assert answered == [("sent", bs[1].conn, line)]
            assert await client.idle()  # the client's connection stays open
            client.close()

    asyncio.run(scenario())
    assert [(method, status) for method, _, status in audited(tmp_path)] == [
        ("GET", 200),
        (line.split()[0], 200),
    ]


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh", "reused-then-fresh"])
def test_a_fresh_connection_that_dies_under_a_request_answers_502(
    tmp_path: Path, pooled: bool
) -> None:
    """Closed after reading the request, before answering: a fresh connection is not
    retried (the daemon may have acted on it); the client gets a 502 and the request
    its audit entry."""

    def drop_b(seen: Seen) -> Reply:
        if seen.line.endswith("/b/json"):
            return Reply(close=True)
        return answer_all(seen)

    async def scenario() -> None:
        script = drop_b if pooled else version_then_close(drop_b)
        async with gateway_between(tmp_path, script) as setup:
            client = await setup.client()
            await client.send(get("/v1.45/containers/b/json"))
            answer = await client.answer()
            assert answer.startswith(b"HTTP/1.1 502 ")
            assert b"Connection: close\r\n" in answer
            message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
            assert message.startswith("dockmoat: upstream failed")
            assert await client.rest() == b""
            seen = setup.daemon.api()
            assert [s.line for s in seen] == ["GET /v1.45/containers/b/json"] * (1 + pooled)
            assert len({s.conn for s in seen}) == len(seen)  # never twice on one connection

    asyncio.run(scenario())
    assert audited(tmp_path) == [("GET", "/v1.45/containers/b/json", 502)]


# --- 6. keep-alive ------------------------------------------------------------------------


KINDS = {
    "get": (get, "GET /v1.45/containers/a/json"),
    "head": (head_request, "HEAD /v1.45/containers/a/json"),
    "post": (lambda t, *x: post(t, CREATE_BODY, *x), "POST /v1.45/containers/a/json"),
}


def expected(line: str) -> bytes:
    """The default answer to `line`, as the daemon writes it."""
    return PATH_STAT if line.startswith("HEAD ") else ok(seen_body(line))


@pytest.mark.parametrize("kind", list(KINDS))
def test_connection_close_from_the_client_closes_after_the_answer(
    tmp_path: Path, kind: str
) -> None:
    build, line = KINDS[kind]

    async def scenario() -> None:
        async with gateway_between(tmp_path) as setup:
            client = await setup.client()
            await client.send(build("/v1.45/containers/a/json", b"Connection: close\r\n"))
            answer = await client.answer(head_only=kind == "head")
            assert answer == expected(line)  # the daemon's answer, as it framed it
            assert await client.rest() == b""  # then the gateway closes
            assert [s.line for s in setup.daemon.api()] == [line]

    asyncio.run(scenario())
    assert [status for *_, status in audited(tmp_path)] == [200]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_daemon_answer_with_connection_close_is_not_reused(tmp_path: Path, kind: str) -> None:
    """The daemon answers with `Connection: close` and closes. The answer is relayed as
    the daemon framed it, header included, so the client's connection ends after it
    (as that header tells the client); nothing of the answer is lost, the daemon's
    connection is not reused, and the next request goes on a fresh one. (A daemon
    that closes an idle connection without saying so leaves the client's connection
    open: test_a_pooled_connection_the_daemon_closed_is_not_used.)"""
    build, line = KINDS[kind]
    closing = PATH_STAT if kind == "head" else ok(seen_body(line))
    closing = closing.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)  # after the status
    closed: list[int] = []

    def close_first(seen: Seen) -> Reply:
        if seen.line == line and not closed:
            closed.append(seen.conn)
            return Reply((closing,), close=True)
        return answer_all(seen)

    async def scenario() -> None:
        async with gateway_between(tmp_path, close_first) as setup:
            client = await setup.client()
            await client.send(build("/v1.45/containers/a/json"))
            assert await client.answer(head_only=kind == "head") == closing
            assert await client.rest() == b""
            client.close()
            client = await setup.client()
            await client.send(build("/v1.45/containers/a/json"))
            assert await client.answer(head_only=kind == "head") == expected(line)
            one, two = setup.daemon.api()
            assert one.line == two.line == line
            assert ("closed", one.conn, "") in setup.daemon.log
            assert two.conn != one.conn
            assert await client.idle()  # a keep-alive answer keeps it open
            client.close()

    asyncio.run(scenario())
    assert [status for *_, status in audited(tmp_path)] == [200, 200]


def test_a_head_answered_without_content_length_keeps_both_connections(tmp_path: Path) -> None:
    """`docker cp FILE ctr:/`: HEAD .../archive (200, no Content-Length, ends at its
    head), then PUT .../archive on the same connection."""
    tar = b"t" * 1024
    put = (
        b"PUT /v1.45/containers/c1/archive?path=%2F HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/x-tar\r\nContent-Length: 1024\r\n\r\n" + tar
    )

    async def scenario() -> None:
        async with gateway_between(tmp_path) as setup:
            client = await setup.client()
            await client.send(head_request("/v1.45/containers/c1/archive?path=%2F"))
            assert await client.answer(head_only=True) == PATH_STAT
            assert await client.idle()  # neither closed nor followed by anything
            await client.send(put)
            assert await client.answer() == ok(
                seen_body("PUT /v1.45/containers/c1/archive?path=%2F")
            )
            head, put_seen = setup.daemon.api()
            assert put_seen.body == tar
            assert put_seen.conn == head.conn  # the daemon's connection was kept too
            assert ("eof", head.conn, "") not in setup.daemon.log
            client.close()

    asyncio.run(scenario())
    assert audited(tmp_path) == [
        ("HEAD", "/v1.45/containers/c1/archive?path=%2F", 200),
        ("PUT", "/v1.45/containers/c1/archive?path=%2F", 200),
    ]


# --- 7. draining ----------------------------------------------------------------------

DRAIN_GRACE = 1.5


@pytest.mark.parametrize("kind", ["get", "post"])
def test_drain_finishes_the_request_in_flight_and_accepts_nothing_new(
    tmp_path: Path, kind: str
) -> None:
    """`Gateway.drain` (SIGTERM): stop accepting (the socket is removed), close idle
    connections, let requests in flight finish within `drain_grace`; a connection
    whose request finished is closed then, and drain returns once none is left.
    `get` is in flight in the fast lane, `post` (a body) in the connection's task."""
    build, line = KINDS[kind]

    def slow(seen: Seen) -> Reply:
        reply = answer_all(seen)
        return reply if seen.line == "GET /version" else Reply(reply.pieces, delay=0.3)

    async def scenario() -> None:
        limits = Limits(drain_grace=DRAIN_GRACE)
        async with gateway_between(tmp_path, slow, limits=limits) as setup:
            idle = await setup.client()
            busy = await setup.client()
            await busy.send(build("/v1.45/containers/a/json"))
            for _ in range(100):
                if setup.daemon.api():
                    break
                await asyncio.sleep(0.01)
            assert [s.line for s in setup.daemon.api()] == [line]  # in flight
            draining = setup.drain()
            assert await idle.rest() == b""  # an idle connection is closed at once
            assert not setup.sock.exists()
            with pytest.raises(OSError):  # nothing new is accepted
                await asyncio.wait_for(asyncio.open_unix_connection(str(setup.sock)), WAIT)
            assert await busy.answer() == ok(seen_body(line))
            # Drain ends once the request in flight has, well before the grace period.
            await asyncio.wait({draining}, timeout=DRAIN_GRACE - 0.6)
            assert draining.done()
            assert await busy.rest() == b""  # its connection is closed after the answer
            assert [s.line for s in setup.daemon.api()] == [line]

    asyncio.run(scenario())
    assert audited(tmp_path) == [(line.split()[0], "/v1.45/containers/a/json", 200)]


def test_drain_lets_a_dead_pooled_connection_be_retried(tmp_path: Path) -> None:
    """A fast-lane GET on a reused daemon connection that the daemon closes unanswered
    while serve drains: the fast lane hands the exchange to the connection's task for
    its one retry, which is carried out (a fresh daemon connection, the answer, its
    audit entry) before the connection is closed."""
    dropped: list[int] = []

    def drop_b_late(seen: Seen) -> Reply:
        if seen.line == "GET /v1.45/containers/b/json" and not dropped:
            dropped.append(seen.conn)
            return Reply(delay=0.3, close=True)
        return answer_all(seen)

    async def scenario() -> None:
        limits = Limits(drain_grace=DRAIN_GRACE)
        async with gateway_between(tmp_path, drop_b_late, limits=limits) as setup:
            client = await setup.client()
            await client.send(get("/v1.45/containers/a/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/a/json"))
            await client.send(get("/v1.45/containers/b/json"))
            for _ in range(100):
                if len(setup.daemon.api()) == 2:
                    break
                await asyncio.sleep(0.01)
            draining = setup.drain()  # while b is in flight on the reused connection
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/b/json"))
            assert await client.rest() == b""  # closed after the answer: serve drains
            await asyncio.wait({draining}, timeout=DRAIN_GRACE)
            assert draining.done()
            a, *bs = setup.daemon.api()
            assert [b.line for b in bs] == ["GET /v1.45/containers/b/json"] * 2
            assert bs[0].conn == a.conn and bs[1].conn != a.conn

    asyncio.run(scenario())
    assert audited(tmp_path) == [
        ("GET", "/v1.45/containers/a/json", 200),
        ("GET", "/v1.45/containers/b/json", 200),
    ]


def test_drain_answers_a_request_handed_to_a_task_not_yet_woken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM arrives after the fast lane handed a request to the connection's task
    (no idle daemon connection: connecting needs the task) and before that task ran.
    The task counts as busy from the hand-over: drain lets it answer the request, with
    its audit entry, instead of cancelling it as an idle connection."""
    gateways: list[Gateway] = []
    hand_over = ClientStream.hand_over

    def then_sigterm(stream: ClientStream, exchange: RequestExchange, command: Command) -> None:
        hand_over(stream, exchange, command)
        gateways[0].stop_accepting()  # drain's first, synchronous step, in the same tick

    async def scenario() -> None:
        limits = Limits(drain_grace=DRAIN_GRACE)
        async with gateway_between(tmp_path, version_then_close(), limits=limits) as setup:
            gateways.append(setup.gateway)
            client = await setup.client()
            monkeypatch.setattr(ClientStream, "hand_over", then_sigterm)
            await client.send(get("/v1.45/containers/a/json"))
            assert await client.answer() == ok(seen_body("GET /v1.45/containers/a/json"))
            assert await client.rest() == b""
            draining = setup.drain()
            await asyncio.wait({draining}, timeout=DRAIN_GRACE)
            assert draining.done()

    asyncio.run(scenario())
    assert audited(tmp_path) == [("GET", "/v1.45/containers/a/json", 200)]
