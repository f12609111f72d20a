"""The fast lane: a scheduling choice of the connection's driver.

See docs/architecture.md ("The fast lane"). A complete bodiless request's exchange
(sansio/request.py, the same object the connection's task drives) is driven here,
from the client's read callback, for as long as each of its commands completes at
once: `take` routes and decides it inline and sends it on an idle pooled daemon
connection; `again` runs it on the routing and decision this connection already
made for the same bytes (`Remembered`, a memo in front of the pure steps);
`FastRelay` relays the answer from the daemon connection's read callback. At the
first command that cannot complete at once, the exchange is handed to the
connection's task, which goes on from that command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from dockmoat.api.endpoints import HIJACKING
from dockmoat.api.request import ClientIdentity
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.answer import Answer
from dockmoat.gateway.sansio.exchange import Exchange
from dockmoat.gateway.sansio.http import (
    MessageEnd,
    RequestEvent,
    RequestHead,
    error_response,
)
from dockmoat.gateway.sansio.request import (
    Close,
    Command,
    Connect,
    Decide,
    Finish,
    Forward,
    Read,
    Reply,
    RequestExchange,
)
from dockmoat.gateway.stages import UNTOUCHED, Context, Policy, RouteFacts, Stage

if TYPE_CHECKING:
    from dockmoat.gateway.client import ClientStream
    from dockmoat.gateway.server import Gateway, Listener
    from dockmoat.gateway.upstream import UpstreamConn

log = logging.getLogger("dockmoat.gateway")


T = TypeVar("T")


def run_inline(coro: Coroutine[Any, Any, T]) -> T | None:
    """The result of a coroutine that finishes without suspending; None (closed) if not."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    return None


@dataclass(slots=True)
class Lane:
    """What the fast lane needs to know of one client connection.

    `stage` is the listener's, or None when it does not apply to this connection
    (`Stage.applies_to`: no tenancy for it): its requests then skip the stage's
    per-request questions, whose answers would be "nothing to do".
    """

    gateway: Gateway
    listener: Listener
    conn_id: int
    client: ClientIdentity
    writer: asyncio.StreamWriter
    stage: Stage | None


class Remembered(NamedTuple):
    """A fast-lane decision, kept to answer the same bytes again on the same connection:
    a memo in front of the pure steps `pipeline.plan` and `pipeline.decide`.

    Pollers on a keep-alive connection (SDK clients waiting for a container's
    health, dashboards, health checks, the benchmark) send the same request head
    again and again. The same bytes, read from a message boundary on the same
    connection (same listener, same client), give the same events; with the same
    policy object and the same stage key for this client (`Stage.decisions_key`),
    `plan` and `decide` give the same outcome: both are pure for bodiless GETs, the
    only routes kept. On a hit the parse, the routing, the decision and the
    serialisation are skipped: the exchange starts where those pure steps left it
    (`RequestExchange.forwarding`), and the answer is relayed and audited as always.
    (Immutable; a NamedTuple because one is built per forwarded GET.)
    """

    head: RequestHead
    outcome: pipeline.Outcome
    forward: Forward
    decision: str
    rule: str
    notes: tuple[str, ...]
    facts: RouteFacts
    policy: Policy
    state: Hashable | None


# Pollers repeat one to three requests. An entry holds a few KB (bytes, parsed head,
# routed request), so 1,000 connections at the cap hold about 10 MB at worst.
REMEMBERED_PER_CONNECTION = 4
# A connection whose last 16 remembered requests never came again (every request
# differs: a counter, a timestamp) remembers one in 64 from then on, until one
# comes again: remembering costs each request about as much as routing it.
REMEMBER_UNREPEATED = 16
REMEMBER_SPARSELY = 64


class FastRelay:
    """A fast-lane answer, relayed from the daemon connection's read callback: the
    same `answer.Answer` as the task path drives, executed without a task.

    Ends by `Gateway` bookkeeping as `_exchange` does (pool, audit, busy set). If
    the daemon's connection fails before any byte of the answer arrived (a pooled
    connection it had closed), the request goes back to the connection's task,
    which sends it again on a fresh connection or answers 502.
    """

    __slots__ = ("answer", "conn", "done", "exchange", "gateway", "paused", "record", "stream",
                 "writer")  # fmt: skip

    def __init__(
        self,
        gateway: Gateway,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        conn: UpstreamConn,
        exchange: RequestExchange,
        answer: Answer,
    ) -> None:
        self.gateway = gateway
        self.stream = stream
        self.writer = writer
        self.conn = conn
        self.exchange = exchange
        self.record = exchange.record
        self.answer = answer
        self.done = False
        self.paused = False  # reading from the daemon, while the client catches up

    def upstream_data(self, data: bytes) -> None:
        self._relay(data)

    def upstream_closed(self) -> None:
        if not self.done:
            self._relay(b"")

    def _relay(self, data: bytes) -> None:
        answer = self.answer
        step = answer.feed(data)
        record = self.record
        record.status = step.status
        if step.broken is not None or step.switch is not None:
            # (The fast lane takes no request whose answer may switch protocols.)
            if answer.error is not None:
                log.error("rewriting the answer to connection %d failed", record.conn_id,
                          exc_info=answer.error)  # fmt: skip
            self._fail()
            return
        if step.send:
            record.bytes_out += len(step.send)
            self.writer.write(step.send)
        if step.end:
            finish = self.exchange.answered(keep=step.keep_client)
            assert isinstance(finish, Finish)
            self._finish(keep=finish.keep, reusable=step.reusable)

    def _fail(self) -> None:
        command = self.exchange.forward_failed(
            ConnectionError(self.answer.error or "the daemon closed the connection"),
            reused=self.conn.reused,
        )
        if isinstance(command, Close):
            self._finish(keep=False, reusable=False)
            return
        # Nothing of the answer was relayed: the connection's task goes on with the
        # exchange (a fresh daemon connection, or the 502).
        self.done = True
        self.conn.protocol.sink = None
        self.gateway.pool.release(self.conn, False)
        self._unbusy()
        stream = self.stream
        stream.relay = None
        hand_over(self.gateway, stream, self.exchange, command)

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
        self.gateway.close_record(self.record)
        self._unbusy()
        # Draining: the connection ends with this answer, as the task's loop ends it.
        self.stream.relay_done(keep and not self.gateway.draining)

    def _unbusy(self) -> None:
        task = self.stream.task
        if task is not None:
            self.gateway.busy.discard(task)


def hand_over(
    gateway: Gateway, stream: ClientStream, exchange: RequestExchange, command: Command
) -> None:
    """Leave `exchange` to the connection's task, from `command` on. The task counts
    as busy from here, not from when it runs: a drain in between must let it answer."""
    if stream.task is not None:
        gateway.busy.add(stream.task)
    stream.hand_over(exchange, command)


def take(
    lane: Lane,
    stream: ClientStream,
    events: list[RequestEvent],
    whole: bytes | None,
) -> bool:
    """`_take`, failing closed: on a bug nothing was sent, the request's bytes are
    counted again with it, and the caller leaves it to the task, decided afresh."""
    counted = stream.bytes_counted
    try:
        return _take(lane, stream, events, whole)
    except BaseException:
        stream.bytes_counted = counted
        stream.take_handed()
        raise


def _take(
    lane: Lane,
    stream: ClientStream,
    events: list[RequestEvent],
    whole: bytes | None,
) -> bool:
    """A complete bodiless request, its exchange driven from the client's read callback.

    The usual CI call (a list, an inspect, a ping, a start, `logs -f`) costs here
    no task wake-up, no coroutine and no stream buffer. The exchange's commands are
    carried out here while each completes at once: a stage that decides this route
    without looking anything up, an idle pooled daemon connection, an answer relayed
    as is. At the first command that cannot, the exchange is handed to the
    connection's task (`ClientStream.hand_over`), which goes on from that command;
    False then, and nothing was sent. The request, its steps and its record are the
    same either way (sansio/request.py).

    `whole` is the read, when it held exactly this request: a forwarded GET is
    then remembered for the connection's next identical read (`again`).
    """
    gateway = lane.gateway
    if len(events) != 2 or gateway.draining:
        return False
    head, end = events
    if (
        not isinstance(head, RequestHead)
        or not isinstance(end, MessageEnd)
        or head.has_body
        or head.upgrade
        or head.method == "HEAD"
    ):
        return False
    listener = lane.listener
    client = lane.client
    policy = listener.policy or gateway.policy
    stage = lane.stage
    record = Exchange(lane.conn_id, client, bytes_in=stream.take_bytes_in())
    exchange = RequestExchange(record, policy, stage, max_body=gateway.limits.max_body)
    command = exchange.start(head)
    if isinstance(command, Read):
        command = exchange.read(end)
    if not isinstance(command, Decide):
        hand_over(gateway, stream, exchange, command)  # a 400: the task answers it
        return False
    request = command.request
    facts = stage.facts(request) if stage is not None else UNTOUCHED
    if (
        command.form
        or request.route.name in HIJACKING
        or facts.answer not in ("none", "json")
        or not facts.inline
    ):
        hand_over(gateway, stream, exchange, command)
        return False
    conn = gateway.pool.take_idle()
    if conn is None:
        hand_over(gateway, stream, exchange, command)  # connecting needs the task
        return False
    ctx = Context(client, gateway.upstream)
    try:
        # The one decision, driven here as far as it goes without suspending: all the
        # way for a stage's inline routes (facts said so) and for no stage at all.
        outcome = run_inline(
            pipeline.decide(request, policy, stage, ctx, form=False, engine=gateway.pool.engine)
        )
        if outcome is None or outcome.body is not None:
            gateway.pool.release(conn, True)
            hand_over(gateway, stream, exchange, command)  # decided afresh by the task
            return False
        command = exchange.decided(outcome)
    except BaseException:
        gateway.pool.release(conn, False)
        raise
    if isinstance(command, Reply):
        gateway.pool.release(conn, True)
        # (No HEAD and no body here: no head-only answer, nothing to linger over.)
        data = error_response(command.status, command.message, keep_alive=command.keep_alive)
        record.bytes_out = len(data)
        lane.writer.write(data)
        gateway.close_record(record)
        stream.relay_done(command.keep_alive)
        return True
    if not isinstance(command, Connect):
        gateway.pool.release(conn, True)
        hand_over(gateway, stream, exchange, command)  # a build's session binding
        return False
    forward = exchange.connected()
    assert isinstance(forward, Forward)
    unrepeated = stream.unrepeated = stream.unrepeated + 1
    if (
        whole is not None
        and head.method == "GET"
        and head.keep_alive
        and (unrepeated <= REMEMBER_UNREPEATED or unrepeated % REMEMBER_SPARSELY == 0)
    ):
        state = stage.decisions_key(client) if stage is not None else None
        if stage is None or state is not None:
            remembered = stream.remembered
            if remembered is None or len(remembered) >= REMEMBERED_PER_CONNECTION:
                remembered = stream.remembered = {}
            remembered[whole] = Remembered(
                head, outcome, forward, record.decision, outcome.decision.rule, record.notes,
                facts, policy, state,
            )  # fmt: skip
    _send(lane, stream, conn, exchange, forward, facts, ctx)
    return True


def again(lane: Lane, stream: ClientStream, known: Remembered) -> bool:
    """A read identical to one already decided on this connection: the same request,
    its exchange run on the remembered routing and decision without parsing, routing
    or deciding it again. False (nothing sent, the read is then parsed) when the
    policy or the client's stage state changed since, or no idle daemon connection is
    at hand.
    """
    gateway = lane.gateway
    listener = lane.listener
    stage = lane.stage
    if (
        gateway.draining
        or known.policy is not (listener.policy or gateway.policy)
        or (stage is not None and stage.decisions_key(lane.client) != known.state)
    ):
        stream.remembered = None  # stale: decided afresh from now on
        return False
    conn = gateway.pool.take_idle()
    if conn is None:
        return False
    stream.unrepeated = 0
    outcome = known.outcome
    record = Exchange(lane.conn_id, lane.client, head=known.head, request=outcome.request,
                      decision=known.decision, rule=known.rule, notes=known.notes,
                      bytes_in=stream.take_bytes_in())  # fmt: skip
    exchange = RequestExchange.forwarding(record, known.policy, stage, outcome, known.forward,
                                          max_body=gateway.limits.max_body)  # fmt: skip
    ctx = None if stage is None else Context(lane.client, gateway.upstream)
    _send(lane, stream, conn, exchange, known.forward, known.facts, ctx)
    return True


def _send(
    lane: Lane,
    stream: ClientStream,
    conn: UpstreamConn,
    exchange: RequestExchange,
    forward: Forward,
    facts: RouteFacts,
    ctx: Context | None,
) -> None:
    gateway = lane.gateway
    record = exchange.record
    try:
        head = record.head
        assert head is not None
        stage = lane.stage
        staged = None if stage is None or ctx is None else (stage, ctx)
        answer = gateway.answer_for(head, forward.request, staged, facts)
        relay = FastRelay(gateway, stream, lane.writer, conn, exchange, answer)
    except Exception:
        # Nothing was sent: the connection goes back, the bytes are counted again with
        # the request wherever it is handled next (the caller logs and falls back).
        gateway.pool.release(conn, True)
        stream.bytes_counted -= record.bytes_in
        raise
    # Nothing below can fail: once the daemon has the request, the task must never
    # be handed it again.
    conn.writer.write(forward.data)
    conn.protocol.sink = relay
    stream.relay_started(relay)
    if stream.task is not None:
        gateway.busy.add(stream.task)
