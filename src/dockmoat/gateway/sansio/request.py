"""One request, from its head to the end of its answer: a sans-IO state machine.

As h11's connection state: the exchange is in one named `Phase`; `WAITS_FOR` is the
one table of what each phase takes next; each event method checks it, moves the
phase and returns the one command the driver carries out next. No I/O and no
asyncio here: the driver (`Gateway._handle`, gateway/server.py) reads the client,
runs the decision (which may look things up in the daemon), holds the daemon's
connection, relays the answer (`sansio.answer.Answer`), and reports back.

    start ─▶ BODY (a body the decision needs) ─┐
          ─▶ END  (a bodiless request's end) ───┼─▶ DECIDING ─▶ BINDING (sessions, builds)
          ─▶ (a streamed body: read later) ────┘        │            │
                                                         ▼            ▼
                                                  CONNECTING ◀───────┘ ─▶ FORWARDING ─▶ DONE
                                                  (again once: a dead pooled connection)

Every way out is a terminal command: `Reply` (an answer of ours: a refusal, a 400,
a 413, a 502), `RefuseTunnel` (a refused BuildKit upgrade, spoken in HTTP/2),
`Finish` (the daemon's answer was relayed) or `Close` (the connection cannot go on).
The audit record (`Exchange`) is filled here, in one place, as the request goes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dockmoat.api.bodies import BodyUnreadable
from dockmoat.api.request import ApiRequest
from dockmoat.errors import (
    BodyTooLarge,
    DockmoatError,
    ProtocolError,
    UpstreamError,
    answer_message,
    http_status,
)
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.exchange import Exchange
from dockmoat.gateway.sansio.http import (
    BodyData,
    Invalid,
    MessageEnd,
    RequestEvent,
    RequestHead,
    serialise_request_head,
)
from dockmoat.gateway.stages import Policy, Stage
from dockmoat.policy.decision import Deny


class Phase(enum.Enum):
    HEAD = "head"  # nothing read yet
    BODY = "body"  # reading a body the decision needs, whole and bounded
    END = "end"  # a bodiless request: waiting for its end
    DECIDING = "deciding"  # the decision (stage, policy) is running
    BINDING = "binding"  # a BuildKit session or build claims its session id
    CONNECTING = "connecting"  # waiting for a daemon connection
    FORWARDING = "forwarding"  # the request went upstream; its answer is being relayed
    DONE = "done"

    # Members are singletons: identity is their hash, in C (Enum's own hashes the name
    # in Python, and every event looks its phase up in `WAITS_FOR`).
    __hash__ = object.__hash__


#: What each phase takes next: the event methods of `RequestExchange` of that name.
WAITS_FOR: Final[Mapping[Phase, frozenset[str]]] = {
    Phase.HEAD: frozenset({"start"}),
    Phase.BODY: frozenset({"read"}),
    Phase.END: frozenset({"read"}),
    Phase.DECIDING: frozenset({"decided"}),
    Phase.BINDING: frozenset({"bound"}),
    Phase.CONNECTING: frozenset({"connected", "connect_failed"}),
    Phase.FORWARDING: frozenset({"answered", "forward_failed", "body_refused"}),
    Phase.DONE: frozenset(),
}

#: Upgrades the gateway reads as HTTP/2 (gateway/tunnel.py): refused in their protocol.
TUNNEL_ROUTES: Final = frozenset({"grpc.grpc", "session.session"})
#: Routes that claim (`/session`) or must own (`/build?session=`) a BuildKit session id.
BUILD_BOUND: Final = frozenset({"session.session", "build.build"})


class LocalProtocolError(Exception):
    """The driver reported an event the exchange does not take in its phase (a bug)."""


# --- commands: what the driver does next -------------------------------------------
# (Built for every request: plain slotted dataclasses, which are built several times
# faster than frozen ones; nothing keeps a command after carrying it out.)


@dataclass(slots=True)
class Read:
    """Feed the client's next request event to `read` (`continue_first`: send
    `100 Continue` before, the client waits for it to send the body)."""

    continue_first: bool = False


@dataclass(slots=True)
class Decide:
    """Run the decision (`pipeline.decide`) on the request; report it to `decided`."""

    request: ApiRequest
    form: bool


@dataclass(slots=True)
class Bind:
    """Bind the BuildKit session id the request names to its tenant; report to `bound`."""

    request: ApiRequest


@dataclass(slots=True)
class Connect:
    """Get a daemon connection (`fresh`: drop the pooled ones first, they proved dead);
    report it to `connected` or `connect_failed`."""

    fresh: bool = False


@dataclass(slots=True)
class Forward:
    """Send `data` upstream, then the client's body when `streaming` (read by `scan`
    as it passes, when there is one; `100 Continue` first when `continue_first`), and
    relay the answer; report to `answered`, `forward_failed` or `body_refused`."""

    data: bytes
    request: ApiRequest
    streaming: bool
    continue_first: bool
    scan: pipeline.BodyReader | None


@dataclass(slots=True)
class Reply:
    """Answer the client ourselves (the record has the status), then keep the connection
    or close it; `linger`: the client may still be sending a body we did not read."""

    status: int
    message: str
    keep_alive: bool
    linger: bool
    head_only: bool


@dataclass(slots=True)
class RefuseTunnel:
    """Switch protocols ourselves and refuse every call with the decision's message."""

    request: ApiRequest
    decision: Deny


@dataclass(slots=True)
class Finish:
    """The daemon's answer was relayed; the client connection stays open when `keep`."""

    keep: bool


@dataclass(slots=True)
class Close:
    """The connection cannot go on (the reason is answered or logged already)."""


Command = Read | Decide | Bind | Connect | Forward | Reply | RefuseTunnel | Finish | Close


class RequestExchange:
    """One request on one client connection; see the module's docstring."""

    __slots__ = ("_body", "_consumed", "_data", "_head", "_outcome", "_planned", "_scan",
                 "_streaming", "attempt", "max_body", "phase", "policy", "record",
                 "stage")  # fmt: skip

    def __init__(
        self, record: Exchange, policy: Policy, stage: Stage | None, *, max_body: int
    ) -> None:
        self.record = record
        self.policy = policy
        self.stage = stage
        self.max_body = max_body
        self.phase = Phase.HEAD
        self.attempt = 0
        self._head: RequestHead | None = None
        self._planned: pipeline.Planned | None = None
        self._outcome: pipeline.Outcome | None = None
        self._body = bytearray()
        self._consumed = False  # the client's body was read whole (or there is none)
        self._streaming = False
        self._data = b""
        self._scan: pipeline.BodyReader | None = None

    @classmethod
    def forwarding(
        cls,
        record: Exchange,
        policy: Policy,
        stage: Stage | None,
        outcome: pipeline.Outcome,
        forward: Forward,
        *,
        max_body: int,
    ) -> RequestExchange:
        """An exchange that starts at FORWARDING: its pure steps (plan, decide, prepare)
        gave `outcome` and `forward` for the same bytes before (a remembered decision,
        `fastlane.Remembered`); `record` already names the request and its decision.
        Only bodiless requests are remembered."""
        exchange = cls(record, policy, stage, max_body=max_body)
        exchange._head = record.head
        exchange._outcome = outcome
        exchange._consumed = True
        exchange._data = forward.data
        exchange.attempt = 1
        exchange.phase = Phase.FORWARDING
        return exchange

    # --- events in ---

    def start(self, event: RequestEvent) -> Command:
        """The request's first event: its head (or what made it unreadable)."""
        self._expect("start")
        if isinstance(event, Invalid):
            return self._error(ProtocolError(event.reason), keep_alive=False)
        if not isinstance(event, RequestHead):
            return self._close()
        head = self._head = event
        self.record.head = head
        try:
            planned = pipeline.plan(head, self.record.client, self.policy, self.stage)
        except ProtocolError as error:
            return self._error(error, keep_alive=False)
        self._planned = planned
        self.record.request = planned.request
        if planned.body_plan == "buffer":
            if (head.content_length or 0) > self.max_body:
                return self._error(self._too_large(), keep_alive=False, linger=True)
            self.phase = Phase.BODY
            # The body is needed for the decision: the client may send it now. A
            # streamed body is asked for only once the request is allowed (`Forward`).
            return Read(continue_first=head.header("expect") is not None)
        if planned.body_plan == "none":
            self._consumed = True
            self.phase = Phase.END
            return Read()
        self._streaming = True
        return self._decide(planned.request)

    def read(self, event: RequestEvent | None) -> Command:
        """The client's next event while the request's body (or end) is read."""
        self._expect("read")
        if self.phase is Phase.END:
            return self._decide(self._routed().request) if isinstance(event, MessageEnd) else (
                self._close()
            )  # fmt: skip
        if isinstance(event, BodyData):
            self._body += event.data
            if len(self._body) > self.max_body:
                return self._error(self._too_large(), keep_alive=False, linger=True)
            return Read()
        if isinstance(event, MessageEnd):
            planned = self._routed()
            try:
                request = pipeline.with_body(planned, bytes(self._body))
            except ProtocolError as error:
                return self._error(error, keep_alive=False)
            self._body = bytearray()
            self._consumed = True
            self.record.request = request
            return self._decide(request)
        reason = event.reason if isinstance(event, Invalid) else (
            "request body could not be read completely"
        )  # fmt: skip
        return self._error(ProtocolError(reason), keep_alive=False)

    def decided(self, outcome: pipeline.Outcome) -> Command:
        self._expect("decided")
        head = self._request_head()
        record = self.record
        self._outcome = outcome
        record.request = outcome.request
        record.decision = pipeline.describe(outcome.decision)
        record.rule = outcome.decision.rule
        record.notes = pipeline.notes_of(outcome)
        decision = outcome.decision
        if isinstance(decision, Deny):
            self.phase = Phase.DONE
            if head.upgrade and outcome.request.route.name in TUNNEL_ROUTES:
                # BuildKit: refused in HTTP/2 and gRPC, which clients print.
                record.status = 101
                return RefuseTunnel(outcome.request, decision)
            return self._reply(
                decision.status,
                decision.message,
                keep_alive=self._consumed and head.keep_alive and not head.upgrade,
                linger=not self._consumed,
            )
        if outcome.request.route.name in BUILD_BOUND:
            self.phase = Phase.BINDING
            return Bind(outcome.request)
        return self._prepare()

    def bound(self, refused: Deny | None) -> Command:
        self._expect("bound")
        if refused is not None:
            return self._refused(refused, linger=self._streaming)
        return self._prepare()

    def connected(self) -> Command:
        self._expect("connected")
        self.phase = Phase.FORWARDING
        head = self._request_head()
        return Forward(
            self._data,
            self._decision().request,
            self._streaming,
            self._streaming and head.header("expect") is not None,
            self._scan,
        )

    def connect_failed(self, error: UpstreamError) -> Command:
        self._expect("connect_failed")
        head = self._request_head()
        return self._error(error, keep_alive=not self._streaming and head.keep_alive)

    def answered(self, *, keep: bool) -> Command:
        """The answer was relayed to its end (`keep`: the client connection may go on)."""
        self._expect("answered")
        self.phase = Phase.DONE
        return Finish(keep)

    def forward_failed(self, error: Exception, *, reused: bool) -> Command:
        """The daemon's connection failed (`reused`: it came from the pool)."""
        self._expect("forward_failed")
        if self.record.status == 0:
            if reused and not self._streaming and self.attempt == 1:
                # A pooled connection the daemon had closed (e.g. it restarted): nothing
                # was received, so the request can go on a fresh one.
                self.phase = Phase.CONNECTING
                self.attempt += 1
                return Connect(fresh=True)
            return self._error(UpstreamError(f"upstream failed: {error}"), keep_alive=False)
        return self._close()  # part of the answer is out: only closing tells the client

    def body_refused(self, decision: Deny) -> Command:
        """A streamed body was read and refused before its end went upstream."""
        self._expect("body_refused")
        if self.record.status != 0:
            return self._close()  # refused after the daemon had answered: cut both
        return self._refused(decision, linger=True)

    # --- internals ---

    def _decide(self, request: ApiRequest) -> Command:
        self.phase = Phase.DECIDING
        return Decide(request, self._routed().form)

    def _prepare(self) -> Command:
        """An allowed request: its body reader (a build context, a load's tarball) and
        the bytes that go upstream."""
        outcome = self._decision()
        head = self._request_head()
        request = outcome.request
        self._scan = None
        if self._streaming or request.route.name == "build.build":
            # (A build without a body may still be refused: a remote context.)
            try:
                reader = pipeline.body_reader(request, self.policy, self.stage)
            except BodyUnreadable as error:
                return self._refused(pipeline.body_refusal(error), linger=True)
            if self._streaming:
                self._scan = reader
        body = outcome.body
        if body is None and self._routed().body_plan == "buffer":
            body = request.body_raw or b""
        if body is not None:
            upstream = serialise_request_head(head, outcome.target, content_length=len(body),
                                              chunked=False) + body  # fmt: skip
        else:
            upstream = serialise_request_head(head, outcome.target,
                                              content_length=head.content_length,
                                              chunked=self._streaming and head.chunked)  # fmt: skip
        self._data = upstream
        self.phase = Phase.CONNECTING
        self.attempt = 1
        return Connect()

    def _refused(self, decision: Deny, *, linger: bool) -> Command:
        self.record.decision, self.record.rule = "refused", decision.rule
        return self._reply(decision.status, decision.message, keep_alive=False, linger=linger)

    def _error(self, error: DockmoatError, *, keep_alive: bool, linger: bool = False) -> Command:
        """The one place an error of ours (raised where the input was checked) becomes
        the client's answer: the status from `errors.http_status`; a request we could not
        read or take is recorded as refused."""
        if isinstance(error, ProtocolError | BodyTooLarge):
            self.record.decision = "refused"
        return self._reply(http_status(error), answer_message(error), keep_alive=keep_alive,
                           linger=linger)  # fmt: skip

    def _reply(self, status: int, message: str, *, keep_alive: bool, linger: bool) -> Command:
        self.phase = Phase.DONE
        self.record.status = status
        head = self._head
        return Reply(
            status, message, keep_alive, linger, head is not None and head.method == "HEAD"
        )

    def _close(self) -> Command:
        self.phase = Phase.DONE
        return Close()

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"request body larger than {self.max_body} bytes "
            "(the limit for bodies that are inspected)"
        )

    def _expect(self, event: str) -> None:
        if event not in WAITS_FOR[self.phase]:
            raise LocalProtocolError(f"{event} in phase {self.phase.value}")

    def _request_head(self) -> RequestHead:
        assert self._head is not None
        return self._head

    def _routed(self) -> pipeline.Planned:
        assert self._planned is not None
        return self._planned

    def _decision(self) -> pipeline.Outcome:
        assert self._outcome is not None
        return self._outcome
