"""The fast lane: complete bodiless requests handled from read callbacks.

See docs/architecture.md ("The fast lane"). `take` decides a request inline and
sends it on an idle pooled daemon connection; `again` resends a decision this
connection already made for the same bytes (`Remembered`); `FastRelay` relays
the answer from the daemon connection's read callback. Whatever cannot be done
synchronously is refused before anything is sent, and the connection's task
handles it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from dockmoat.api.endpoints import HIJACKING
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.errors import ProtocolError
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.answer import Answer
from dockmoat.gateway.sansio.exchange import Exchange
from dockmoat.gateway.sansio.http import (
    MessageEnd,
    RequestEvent,
    RequestHead,
    error_response,
    serialise_request_head,
)
from dockmoat.gateway.stages import UNTOUCHED, Context, Policy, RouteFacts, Stage
from dockmoat.policy.decision import Deny

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
    """A fast-lane decision, kept to answer the same bytes again on the same connection.

    Pollers on a keep-alive connection (SDK clients waiting for a container's
    health, dashboards, health checks, the benchmark) send the same request head
    again and again. The same bytes, read from a message boundary on the same
    connection (same listener, same client), give the same events; with the same
    policy object and the same stage key for this client (`Stage.decisions_key`),
    `plan` and `decide` give the same outcome: both are pure for bodiless GETs, the
    only routes kept. On a hit only the parse, the routing, the decision and the
    serialisation are skipped; the answer is relayed and audited as always.
    (Immutable; a NamedTuple because one is built per forwarded GET.)
    """

    events: tuple[RequestEvent, ...]
    head: RequestHead
    request: ApiRequest
    upstream_head: bytes
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

    __slots__ = ("answer", "conn", "done", "events", "gateway", "paused", "record", "stream",
                 "writer")  # fmt: skip

    def __init__(
        self,
        gateway: Gateway,
        stream: ClientStream,
        writer: asyncio.StreamWriter,
        conn: UpstreamConn,
        record: Exchange,
        events: Sequence[RequestEvent],
        answer: Answer,
    ) -> None:
        self.gateway = gateway
        self.stream = stream
        self.writer = writer
        self.conn = conn
        self.record = record
        self.events = events
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
            self._finish(keep=step.keep_client, reusable=step.reusable)

    def _fail(self) -> None:
        if self.record.status == 0:
            # Nothing of the answer was relayed: the task sends the request again.
            self.done = True
            self.conn.protocol.sink = None
            self.gateway.pool.release(self.conn, False)
            self._unbusy()
            stream = self.stream
            stream.relay = None
            stream.bytes_counted -= self.record.bytes_in  # audited with the retry instead
            stream.events.extend(self.events)
            stream.wake()
            return
        self._finish(keep=False, reusable=False)

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


def take(
    lane: Lane,
    stream: ClientStream,
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
    then remembered for the connection's next identical read (`again`).
    """
    gateway = lane.gateway
    if len(events) != 2 or gateway.draining:
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
    policy = listener.policy or gateway.policy
    stage = lane.stage
    try:
        planned = pipeline.plan(head, client, policy)
    except ProtocolError:
        return False  # the task answers the 400
    request = planned.request
    # From here, a refusal hands the routed request to the task (`Gateway._handle`), which
    # then does not route it again.
    stream.routed(head, planned)
    if planned.form or request.route.name in HIJACKING:
        return False
    facts = stage.facts(request) if stage is not None else UNTOUCHED
    if facts.answer not in ("none", "json") or not facts.inline:
        return False
    conn = gateway.pool.take_idle()
    if conn is None:
        return False  # connecting needs the task
    stream.routed(head, None)
    ctx: Context | None = None
    try:
        if stage is None:
            outcome: pipeline.Outcome | None = pipeline.decide_now(
                request, policy, form=False, engine=gateway.pool.engine
            )
        else:
            ctx = Context(client, gateway.upstream)
            outcome = run_inline(
                pipeline.decide(request, policy, stage, ctx, form=False, engine=gateway.pool.engine)
            )
        if outcome is None or outcome.body is not None:
            gateway.pool.release(conn, True)
            return False
        decision = outcome.decision
        upstream_head = None
        if not isinstance(decision, Deny):
            upstream_head = serialise_request_head(
                head, outcome.target, content_length=None, chunked=False
            )
    except Exception:  # noqa: BLE001 - fail closed: nothing sent; the task reports it
        gateway.pool.release(conn, False)
        return False
    record = Exchange(
        lane.conn_id, client, head=head, request=outcome.request,
        decision=pipeline.describe(decision), rule=decision.rule,
        notes=pipeline.notes_of(outcome), bytes_in=stream.take_bytes_in(),
    )  # fmt: skip
    writer = lane.writer
    if upstream_head is None:
        assert isinstance(decision, Deny)
        gateway.pool.release(conn, True)
        answer = error_response(decision.status, decision.message,
                                keep_alive=head.keep_alive)  # fmt: skip
        record.status = decision.status
        record.bytes_out = len(answer)
        writer.write(answer)
        gateway.close_record(record)
        stream.relay_done(head.keep_alive)
        return True
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
                (head, events[1]), head, outcome.request, upstream_head, record.decision,
                decision.rule, record.notes, facts, policy, state,
            )  # fmt: skip
    _send(lane, stream, conn, record, events, upstream_head, facts, ctx)
    return True


def again(lane: Lane, stream: ClientStream, known: Remembered) -> bool:
    """A read identical to one already decided on this connection: the same request,
    sent again without parsing, routing or deciding it again. False (nothing sent,
    the read is then parsed) when the policy or the client's stage state changed
    since, or no idle daemon connection is at hand.
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
    record = Exchange(lane.conn_id, lane.client, head=known.head, request=known.request,
                      decision=known.decision, rule=known.rule, notes=known.notes,
                      bytes_in=stream.take_bytes_in())  # fmt: skip
    ctx = None if stage is None else Context(lane.client, gateway.upstream)
    _send(lane, stream, conn, record, known.events, known.upstream_head, known.facts, ctx)
    return True


def _send(
    lane: Lane,
    stream: ClientStream,
    conn: UpstreamConn,
    record: Exchange,
    events: Sequence[RequestEvent],
    upstream_head: bytes,
    facts: RouteFacts,
    ctx: Context | None,
) -> None:
    gateway = lane.gateway
    try:
        request = record.request
        head = record.head
        assert request is not None and head is not None
        limits = gateway.limits
        stage = lane.stage
        staged = None if stage is None or ctx is None else (stage, ctx)
        answer = Answer(head, request, staged, facts, max_head=limits.max_head,
                        max_held=limits.max_json_response, pins=gateway.pins)  # fmt: skip
        relay = FastRelay(gateway, stream, lane.writer, conn, record, events, answer)
    except Exception:
        # Nothing was sent: the connection goes back, the bytes are counted again with
        # the request wherever it is handled next (the caller logs and falls back).
        gateway.pool.release(conn, True)
        stream.bytes_counted -= record.bytes_in
        raise
    # Nothing below can fail: once the daemon has the request, the task must never
    # be handed it again.
    conn.writer.write(upstream_head)
    conn.protocol.sink = relay
    stream.relay_started(relay)
    if stream.task is not None:
        gateway.busy.add(stream.task)
