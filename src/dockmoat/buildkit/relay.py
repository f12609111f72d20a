"""The sans-IO HTTP/2 relay of one upgraded `/grpc` or `/session` connection.

Two h2 connections per upgraded stream: one facing the client, one facing the
daemon. Which side calls and which answers depends on the tunnel: on `/grpc` the
client calls the daemon's BuildKit; on `/session` the daemon calls the client's
session services. The relay is the gRPC *server* towards the caller and the gRPC
*client* towards the callee, and relays each call stream by stream:

- HEADERS of a new call: the path must be a method of the tunnel's table
  (`services`) and the decider must admit the call (`Decider.admit`); otherwise the
  caller gets a gRPC error at once (trailers-only) and the callee never sees it.
- request messages are read whole (`grpc.MessageReader`, bounded), decoded
  (`messages`); one that says something (a Solve, an image to resolve, a container)
  waits for the decider (`Decide` command, answered by `decided`), opaque ones pass;
  only then is the message framed again and sent on. Nothing unread is forwarded.
- answer messages are read whole too, and go through `Decider.answer` where the
  decider filters them (tenancy: another tenant's build history is dropped).
- a refused message ends the call with PERMISSION_DENIED (or the decider's status)
  and cancels the callee's stream; the connection and its other calls go on. A
  watched call's caller gets the reason in the call's own protocol first, in place of
  what was held (`AnswerWatch.refused`).
- flow control: data is acknowledged to its sender as it is read, except while the
  call's backlog towards the other side is above `HIGH`; then the acknowledgement
  waits until the other side's window drains it.
- one read at a time: the events of what one read brought are handled before the
  short frames and acknowledgements go out, so a message's short last frame shares a
  frame with the next message of the same read, and each stream is acknowledged once
  per read (the relay's cost is per frame: h2 is pure Python).
- GOAWAY or a protocol error on either side closes both (after what is queued).

Events in (`receive_client`, `receive_upstream`, `decided`), commands out
(`SendClient`, `SendUpstream`, `Decide`, `Close`). Any exception inside becomes a
`Close`: the connection ends, nothing more is relayed (fail closed).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
from hyperframe.frame import DataFrame

from dockmoat.api.bodies import UNREADABLE_RULE
from dockmoat.buildkit import grpc, services
from dockmoat.buildkit.messages import Message, Opaque
from dockmoat.buildkit.services import Method, Tunnel
from dockmoat.buildkit.wire import WireError

log = logging.getLogger(__name__)

HIGH: Final = 1024 * 1024
"""Backlog of one call towards the other side above which its sender is not acknowledged."""
MAX_STREAMS: Final = 128
MAX_HEADER_LIST: Final = 64 * 1024
WINDOW: Final = 4 * 1024 * 1024
#: Headers that belong to one HTTP/2 hop and are never relayed.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})
MAX_HELD: Final = 2 * 1024 * 1024
"""The most of a call's answers held while a watch's reading is decided."""
BODY_RULE: Final = UNREADABLE_RULE


# --- h2's frame texts -------------------------------------------------------------------


def _short_data_repr(raw_data_repr: Callable[[bytes], str]) -> Callable[[DataFrame], str]:
    """hyperframe's own text of a DATA frame's body, without the cost of making it.

    h2 formats `repr(frame)` for every frame it receives, before its (no-op) logger is
    called. hyperframe's DATA frames have no text of their own, so the fallback
    serializes the whole body (data and padding, up to 16 KiB) and hexlifies it to show
    its first 10 bytes: about a sixth of the relay's time on a build context. This is
    the same text (`_raw_data_repr` of the body's first 11 bytes says "..." exactly when
    the body has more than 10), made from those bytes only."""

    def body_repr(frame: DataFrame) -> str:
        head = frame.serialize_padding_data() + bytes(frame.data[:11])
        if len(head) < 11 and frame.pad_length:
            head += b"\0" * min(frame.pad_length, 11 - len(head))
        return raw_data_repr(head[:11])

    return body_repr


_RAW_DATA_REPR = getattr(hyperframe.frame, "_raw_data_repr", None)
if callable(_RAW_DATA_REPR) and "_body_repr" not in vars(DataFrame):
    # Only over the fallback this was measured against (a hyperframe that gives DATA
    # frames a text of their own keeps it).
    DataFrame._body_repr = _short_data_repr(_RAW_DATA_REPR)  # type: ignore[assignment,method-assign]


# --- what the relay asks of its decider ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One gRPC call: which method, on which tunnel, with which metadata."""

    tunnel: Tunnel
    method: Method
    metadata: tuple[tuple[str, str], ...]
    stream: int = 0  # the caller's stream: which call of the connection this is

    def header(self, name: str) -> str | None:
        for key, value in self.metadata:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Pass:
    """Forward the message as it is."""


@dataclass(frozen=True, slots=True)
class Replace:
    """Forward this payload instead (the guard added to the message)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Refuse:
    """End the call with a gRPC error; the callee's stream is cancelled."""

    message: str
    status: int = grpc.PERMISSION_DENIED


@dataclass(frozen=True, slots=True)
class Answer:
    """The guard answers the call itself (these messages, then OK); the callee never sees it."""

    payloads: tuple[bytes, ...] = ()


Verdict = Pass | Replace | Refuse | Answer
PASS: Final = Pass()


class Decider(Protocol):
    def admit(self, call: Call) -> Refuse | Answer | None:
        """At the call's headers: None to open it towards the callee."""
        ...

    def filters(self, call: Call) -> bool:
        """Whether `answer` must see this call's answer messages."""
        ...

    def answer(self, call: Call, payload: bytes) -> bytes | None:
        """An answer message as the caller gets it; None drops it."""
        ...

    def follows(self, call: Call) -> bool:
        """At the call's headers: whether the relay says how it ended (`Ended`)."""
        ...

    def watch(self, call: Call) -> AnswerWatch | None:
        """At the call's headers: a watch that reads its answers as they pass (they are
        held from where it says until the decider admits what it read), or None."""
        ...


class AnswerWatch(Protocol):
    def feed(self, payload: bytes) -> Watched:
        """One answer message: how to forward it, and whether to hold or decide now.
        Raises ValueError (the call is refused with its message)."""
        ...

    def refused(self, message: str) -> bytes | None:
        """The call is refused: a last answer message of the guard's own, in the call's
        protocol, that tells the caller why (it replaces all that was held and comes
        before the gRPC error), or None for the error alone."""
        ...


@dataclass(frozen=True, slots=True)
class Watched:
    payload: bytes  # as forwarded
    hold: bool  # held (with everything after it) until the decision
    decide: Message | None = None  # decide this now; what is held waits for it


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendUpstream:
    data: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    """Await the decider on this message, then call `Relay.decided(token, verdict)`."""

    token: int
    call: Call
    message: Message
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ended:
    """A followed call ended: `ok` when the callee finished it with grpc-status 0;
    a refusal, a reset or a connection lost is not ok. Answered by awaiting
    `decider.ended(call, ok)` (the relay expects nothing back)."""

    call: Call
    ok: bool


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


Command = SendClient | SendUpstream | Decide | Ended | Close


# --- state ------------------------------------------------------------------------------


class RelayState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # a GOAWAY was seen or sent: queued bytes go out, then Close
    CLOSED = "closed"


class LegState(enum.Enum):
    OPEN = "open"  # relaying both ways
    REFUSED = "refused"  # the guard ended it; late frames are acknowledged and dropped
    ANSWERED = "answered"  # the guard answers it itself
    DONE = "done"


@dataclass(slots=True)
class Outbound:
    """What waits for the receiving side's flow-control window, in order.

    The bytes are a queue of the pieces as they were read (message prefixes and
    payloads), not one buffer: a call's backlog can reach `HIGH`, and a buffer that is
    appended to at its end and sent from its front is copied whole again and again."""

    chunks: deque[bytes | memoryview] = field(default_factory=deque)
    size: int = 0  # bytes queued
    end: bool = False
    trailers: list[tuple[str, str]] | None = None
    sent_end: bool = False
    held: bool = False  # nothing goes out until the decider admitted what was read
    held_from: int = 0  # while held: the bytes queued before the hold (passed ones)
    short: bool = False  # a short last frame waits for the end of the read (`_send`)

    def message(self, payload: bytes) -> None:
        """One gRPC message, framed (prefix and payload queued as they are)."""
        self.chunks.append(grpc.prefix(len(payload)))
        self.size += grpc.PREFIX
        if payload:
            self.chunks.append(payload)
            self.size += len(payload)

    def take(self, limit: int) -> bytes:
        """Up to `limit` bytes from the front, in order, as one piece."""
        pieces: list[bytes | memoryview] = []
        need = limit
        chunks = self.chunks
        while need > 0 and chunks:
            head = chunks[0]
            if len(head) <= need:
                pieces.append(chunks.popleft())
                need -= len(head)
            else:
                view = memoryview(head)
                pieces.append(view[:need])
                chunks[0] = view[need:]
                need = 0
        self.size -= limit - need
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0

    def truncate(self, size: int) -> None:
        """Only the first `size` bytes stay queued."""
        kept = self.take(min(size, self.size))
        self.clear()
        if kept:
            self.chunks.append(kept)
            self.size = len(kept)


@dataclass(slots=True)
class Leg:
    """One call: the caller's stream, the callee's stream, and what is in between."""

    caller_id: int
    callee_id: int | None
    call: Call
    filtered: bool
    state: LegState = LegState.OPEN
    requests: grpc.MessageReader = field(default_factory=grpc.MessageReader)
    answers: grpc.MessageReader = field(default_factory=grpc.MessageReader)
    held: deque[tuple[Message, bytes]] = field(default_factory=deque)
    held_bytes: int = 0
    deciding: int | None = None
    caller_ended: bool = False
    headers_sent: bool = False
    to_callee: Outbound = field(default_factory=Outbound)
    to_caller: Outbound = field(default_factory=Outbound)
    unacked_caller: int = 0
    unacked_callee: int = 0
    watch: AnswerWatch | None = None
    answer_deciding: int | None = None
    follow: bool = False  # say how it ended (Ended), once
    ok: bool = False  # the callee's trailers said grpc-status 0


class FrameGate:
    """Frame headers checked as bytes arrive: h2 buffers a whole frame before it looks at
    its length, so a peer declaring a 16 MiB frame would be buffered whole first."""

    def __init__(self, preface: int, max_frame: int) -> None:
        self.skip = preface  # the connection preface (server role), then each frame's body
        self.header = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        while True:
            if self.skip:
                taken = min(self.skip, end - pos)
                self.skip -= taken
                pos += taken
            if pos >= end:
                return
            if self.header or end - pos < 9:  # a header split between reads
                need = 9 - len(self.header)
                self.header += data[pos : pos + need]
                pos += min(need, end - pos)
                if len(self.header) < 9:
                    return
                length = int.from_bytes(self.header[:3], "big")
                self.header.clear()
            else:
                length = int.from_bytes(data[pos : pos + 3], "big")
                pos += 9
            if length > self.max_frame:
                raise h2.exceptions.FrameTooLargeError(
                    f"a frame of {length} bytes (at most {self.max_frame})"
                )
            self.skip = length


def _text(headers: Sequence[tuple[bytes | str, bytes | str]] | None) -> list[tuple[str, str]]:
    """Header fields as text (h2 decodes them with `header_encoding`; bytes never stay)."""
    out: list[tuple[str, str]] = []
    for key, value in headers or ():
        out.append(
            (
                key.decode("utf-8") if isinstance(key, bytes) else key,
                value.decode("utf-8") if isinstance(value, bytes) else value,
            )
        )
    return out


def _config(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding="utf-8",
        validate_inbound_headers=True,
        validate_outbound_headers=True,
        normalize_outbound_headers=False,
    )


def _settings() -> dict[h2.settings.SettingCodes, int]:
    return {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
    }


class Relay:
    """One upgraded connection's two HTTP/2 sides and every call between them."""

    def __init__(self, tunnel: Tunnel, decider: Decider) -> None:
        self.tunnel: Tunnel = tunnel
        self.decider = decider
        self.state = RelayState.OPEN
        # /grpc: the client calls (we serve it), the daemon answers (we are its client).
        # /session: the daemon calls (we serve it), the client answers.
        self.caller_is_client = tunnel == "grpc"
        self.caller = h2.connection.H2Connection(_config(client_side=False))
        self.callee = h2.connection.H2Connection(_config(client_side=True))
        max_frame = h2.settings.Settings().max_frame_size
        self.caller_gate = FrameGate(len(PREFACE), max_frame)
        self.callee_gate = FrameGate(0, max_frame)
        self.legs: dict[int, Leg] = {}
        self.by_callee: dict[int, Leg] = {}
        self._tokens = 0
        self._pending: dict[int, Leg] = {}
        self._answer_pending: dict[int, Leg] = {}
        self._ended: list[Ended] = []
        # While the events of one read are handled, a short last frame waits for the end
        # of the read, where what came with it has joined it (`_send`, `_send_short`).
        self._reading = False
        self._short: list[tuple[h2.connection.H2Connection, int, Outbound]] = []
        # ... and what it acknowledges is added up per stream, acknowledged once at its end.
        self._acks: dict[tuple[h2.connection.H2Connection, int], int] = {}
        self.callee.local_settings = h2.settings.Settings(client=True, initial_values=_settings())
        self.caller.local_settings = h2.settings.Settings(client=False, initial_values=_settings())

    # --- entry points ---------------------------------------------------------------

    def start(self) -> list[Command]:
        """The prefaces: our SETTINGS to both sides (the client side sends PRI first)."""
        return self._guarded(self._start)

    def receive_client(self, data: bytes) -> list[Command]:
        conn_is_caller = self.caller_is_client
        return self._guarded(lambda: self._receive(data, caller=conn_is_caller))

    def receive_upstream(self, data: bytes) -> list[Command]:
        conn_is_caller = not self.caller_is_client
        return self._guarded(lambda: self._receive(data, caller=conn_is_caller))

    def decided(self, token: int, verdict: Verdict) -> list[Command]:
        return self._guarded(lambda: self._decided(token, verdict))

    def goaway(self) -> list[Command]:
        """End both sides (GOAWAY); what was queued goes first."""

        def both() -> list[Command]:
            for conn in (self.caller, self.callee):
                conn.close_connection()
            self.state = RelayState.CLOSING
            return []

        return self._guarded(both)

    def client_closed(self) -> list[Command]:
        return self._close("the client closed the connection")

    def upstream_closed(self) -> list[Command]:
        return self._close("the daemon closed the connection")

    # --- plumbing -------------------------------------------------------------------

    def _guarded(self, step: Callable[[], list[Command] | None]) -> list[Command]:
        if self.state is RelayState.CLOSED:
            return []
        out: list[Command] = []
        try:
            self._reading = True
            try:
                made = step()
            finally:
                self._reading = False
            self._send_short()
            self._send_acks()
            if made:
                out.extend(made)
        except Exception as error:  # fail closed: nothing more is relayed
            log.warning("BuildKit %s tunnel closed: %s", self.tunnel, error, exc_info=True)
            self.state = RelayState.CLOSED
            return [
                *self._flush_bytes(),
                *self._flush_ended(),
                Close(f"{type(error).__name__}: {error}"),
            ]
        out.extend(self._flush_bytes())
        if self.state is RelayState.CLOSING and not self._backlog():
            self.state = RelayState.CLOSED
            out.extend(self._flush_ended())
            out.append(Close("connection ended (GOAWAY)"))
        else:
            out.extend(self._flush_ended())
        return out

    def _flush_ended(self) -> list[Command]:
        """The followed calls that ended; all the rest too once the connection is closed."""
        if self.state is RelayState.CLOSED:
            for leg in list(self.legs.values()):
                self._drop(leg)
        ended, self._ended = self._ended, []
        return list(ended)

    def _flush_bytes(self) -> list[Command]:
        out: list[Command] = []
        to_caller = self.caller.data_to_send()
        to_callee = self.callee.data_to_send()
        client, upstream = (
            (to_caller, to_callee) if self.caller_is_client else (to_callee, to_caller)
        )
        if client:
            out.append(SendClient(client))
        if upstream:
            out.append(SendUpstream(upstream))
        return out

    def _close(self, reason: str) -> list[Command]:
        if self.state is RelayState.CLOSED:
            return []
        self.state = RelayState.CLOSED
        return [*self._flush_ended(), Close(reason)]

    def _backlog(self) -> bool:
        return any(
            (leg.to_callee.size or leg.to_caller.size) and leg.state is LegState.OPEN
            for leg in self.legs.values()
        )

    def _start(self) -> list[Command]:
        for conn in (self.caller, self.callee):
            conn.initiate_connection()
            conn.increment_flow_control_window(WINDOW - 65535)
        return []

    def _receive(self, data: bytes, *, caller: bool) -> list[Command]:
        if not data:
            return self._close("end of stream")
        conn = self.caller if caller else self.callee
        try:
            (self.caller_gate if caller else self.callee_gate).feed(data)
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # GOAWAY to both sides (h2 may have queued the offender's already).
            for side in (conn, self.callee if caller else self.caller):
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    side.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self.state = RelayState.CLOSING
            log.info("BuildKit %s tunnel: HTTP/2 protocol error: %s", self.tunnel, error)
            return []
        out: list[Command] = []
        for event in events:
            if caller:
                out.extend(self._caller_event(event))
            else:
                out.extend(self._callee_event(event))
        return out

    # --- the caller's side --------------------------------------------------------------

    def _caller_event(self, event: h2.events.Event) -> list[Command]:
        if isinstance(event, h2.events.RequestReceived):
            return self._open_call(event)
        if isinstance(event, h2.events.DataReceived):
            return self._request_data(event)
        if isinstance(event, h2.events.StreamEnded):
            leg = self.legs.get(event.stream_id or 0)
            if leg is not None:
                leg.caller_ended = True
                return self._pump_requests(leg)
            return []
        if isinstance(event, h2.events.StreamReset):
            leg = self.legs.pop(event.stream_id or 0, None)
            if leg is not None:
                self._drop(leg)
                if leg.callee_id is not None and leg.state is LegState.OPEN:
                    self._reset(self.callee, leg.callee_id, event.error_code)
            return []
        if isinstance(event, h2.events.WindowUpdated):
            return self._window(event.stream_id, towards_caller=True)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.callee.close_connection()
            self.state = RelayState.CLOSING
            return []
        # Settings, pings (answered by h2), priorities, unknown frames: nothing to relay.
        return []

    def _open_call(self, event: h2.events.RequestReceived) -> list[Command]:
        stream_id = event.stream_id or 0
        headers = _text(event.headers)
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        path = pseudo.get(":path", "")
        method = services.lookup(self.tunnel, path)
        if method is None or pseudo.get(":method") != "POST":
            self._refuse_headers(
                stream_id,
                Refuse(
                    f"dockmoat: build.grpc-method: {path[:200]!r} is not a BuildKit call the "
                    f"guard reads on /{self.tunnel}. Open services: "
                    f"{services.open_services(self.tunnel)}"
                ),
            )
            return []
        metadata = tuple((k, v) for k, v in headers if not k.startswith(":") and k not in _HOP)
        call = Call(self.tunnel, method, metadata, stream_id)
        verdict = self.decider.admit(call)
        leg = Leg(stream_id, None, call, filtered=False)
        if isinstance(verdict, Refuse):
            # Not remembered: late DATA on the stream is acknowledged and dropped as for
            # any unknown stream, so refused calls cost nothing however many there are.
            self._refuse_headers(stream_id, verdict)
            return []
        if isinstance(verdict, Answer):
            leg.state = LegState.ANSWERED
            self._answer(leg, verdict)
            return []
        self.legs[stream_id] = leg
        leg.filtered = self.decider.filters(call)
        leg.watch = self.decider.watch(call)
        leg.follow = self.decider.follows(call)
        try:
            callee_id = self.callee.get_next_available_stream_id()
            self.callee.send_headers(callee_id, [(k, v) for k, v in headers if k not in _HOP])
        except h2.exceptions.TooManyStreamsError:
            self.legs.pop(stream_id, None)
            self._refuse_headers(
                stream_id, Refuse("dockmoat: too many concurrent calls", grpc.RESOURCE_EXHAUSTED)
            )
            return []
        leg.callee_id = callee_id
        self.by_callee[callee_id] = leg
        return []

    def _request_data(self, event: h2.events.DataReceived) -> list[Command]:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        leg = self.legs.get(stream_id)
        if leg is None or leg.state is not LegState.OPEN:
            self._ack(self.caller, stream_id, size)
            return []
        try:
            payloads = leg.requests.feed(event.data or b"")
        except grpc.FramingError as error:
            self._ack(self.caller, stream_id, size)
            return self._refuse(leg, Refuse(f"dockmoat: build.grpc-method: {error}", error.status))
        for payload in payloads:
            try:
                message = leg.call.method.decode(payload)
            except WireError as error:
                self._ack(self.caller, stream_id, size)
                return self._refuse(
                    leg,
                    Refuse(
                        f"dockmoat: build.grpc-method: a {leg.call.method.short} message the "
                        f"guard cannot read ({error})"
                    ),
                )
            leg.held.append((message, payload))
            leg.held_bytes += len(payload)
        if leg.held_bytes + leg.to_callee.size > HIGH:
            leg.unacked_caller += size
        else:
            self._ack(self.caller, stream_id, size)
        return self._pump_requests(leg)

    def _pump_requests(self, leg: Leg) -> list[Command]:
        """Send on what is decided, ask for the next decision, end when the caller ended."""
        out: list[Command] = []
        while leg.state is LegState.OPEN and leg.deciding is None and leg.held:
            message, payload = leg.held[0]
            if isinstance(message, Opaque):
                leg.held.popleft()
                leg.held_bytes -= len(payload)
                leg.to_callee.message(payload)
                continue
            self._tokens += 1
            leg.deciding = self._tokens
            self._pending[self._tokens] = leg
            out.append(Decide(self._tokens, leg.call, message, payload))
        if (
            leg.state is LegState.OPEN
            and leg.caller_ended
            and not leg.held
            and leg.deciding is None
        ):
            leg.to_callee.end = True
        if leg.state is LegState.OPEN and leg.callee_id is not None:
            self._send(self.callee, leg.callee_id, leg.to_callee)
            self._release_ack(leg, towards_caller=False)
        return out

    def _decided(self, token: int, verdict: Verdict) -> list[Command]:
        if token in self._answer_pending:
            return self._answer_decided(self._answer_pending.pop(token), token, verdict)
        leg = self._pending.pop(token, None)
        if leg is None or leg.deciding != token:
            return []
        leg.deciding = None
        if leg.state is not LegState.OPEN:
            return []
        _message, payload = leg.held.popleft()
        leg.held_bytes -= len(payload)
        if isinstance(verdict, Refuse):
            return self._refuse(leg, verdict)
        if isinstance(verdict, Answer):
            if leg.callee_id is not None:
                self._reset(self.callee, leg.callee_id, h2.errors.ErrorCodes.CANCEL)
            leg.state = LegState.ANSWERED
            self._answer(leg, verdict)
            return []
        leg.to_callee.message(verdict.payload if isinstance(verdict, Replace) else payload)
        return self._pump_requests(leg)

    # --- the callee's side --------------------------------------------------------------

    def _callee_event(self, event: h2.events.Event) -> list[Command]:
        if isinstance(event, h2.events.ResponseReceived):
            leg = self.by_callee.get(event.stream_id or 0)
            if leg is not None and leg.state is LegState.OPEN:
                headers = [(k, v) for k, v in _text(event.headers) if k not in _HOP]
                self.caller.send_headers(leg.caller_id, headers)
                leg.headers_sent = True
            return []
        if isinstance(event, h2.events.DataReceived):
            return self._answer_data(event)
        if isinstance(event, h2.events.TrailersReceived):
            leg = self.by_callee.get(event.stream_id or 0)
            if leg is not None and leg.state is LegState.OPEN:
                trailers = [(k, v) for k, v in _text(event.headers) if k not in _HOP]
                leg.ok = [v for k, v in trailers if k == "grpc-status"] == ["0"]
                if leg.headers_sent:
                    leg.to_caller.trailers = trailers
                else:  # trailers-only answer: it is the answer's only HEADERS
                    self.caller.send_headers(leg.caller_id, trailers, end_stream=True)
                    leg.to_caller.sent_end = True
                    leg.headers_sent = True
                leg.to_caller.end = True
                self._send(self.caller, leg.caller_id, leg.to_caller)
                self._finish(leg)
            return []
        if isinstance(event, h2.events.StreamEnded):
            leg = self.by_callee.get(event.stream_id or 0)
            if leg is not None and leg.state is LegState.OPEN and not leg.to_caller.end:
                leg.to_caller.end = True
                self._send(self.caller, leg.caller_id, leg.to_caller)
                self._finish(leg)
            return []
        if isinstance(event, h2.events.StreamReset):
            leg = self.by_callee.pop(event.stream_id or 0, None)
            if leg is not None:
                if leg.state is LegState.OPEN:
                    self._reset(self.caller, leg.caller_id, event.error_code)
                self.legs.pop(leg.caller_id, None)
                self._drop(leg)
            return []
        if isinstance(event, h2.events.WindowUpdated):
            return self._window(event.stream_id, towards_caller=False)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.caller.close_connection()
            self.state = RelayState.CLOSING
            return []
        return []

    def _answer_data(self, event: h2.events.DataReceived) -> list[Command]:
        callee_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        leg = self.by_callee.get(callee_id)
        if leg is None or leg.state is not LegState.OPEN:
            self._ack(self.callee, callee_id, size)
            return []
        try:
            payloads = leg.answers.feed(event.data or b"")
        except grpc.FramingError as error:
            self._ack(self.callee, callee_id, size)
            return self._refuse(leg, Refuse(f"dockmoat: an answer the guard cannot read: {error}"))
        out: list[Command] = []
        for payload in payloads:
            if leg.watch is not None:
                try:
                    watched = leg.watch.feed(payload)
                except ValueError as error:
                    self._ack(self.callee, callee_id, size)
                    return self._refuse(leg, Refuse(f"dockmoat: {BODY_RULE}: {error}"))
                payload = watched.payload
                if (watched.hold or watched.decide is not None) and not leg.to_caller.held:
                    leg.to_caller.held = True
                    leg.to_caller.held_from = leg.to_caller.size
                if watched.decide is not None:
                    self._tokens += 1
                    leg.answer_deciding = self._tokens
                    self._answer_pending[self._tokens] = leg
                    out.append(Decide(self._tokens, leg.call, watched.decide, b""))
                if leg.to_caller.held and leg.to_caller.size > MAX_HELD:
                    self._ack(self.callee, callee_id, size)
                    return self._refuse(
                        leg, Refuse(f"dockmoat: {BODY_RULE}: more than {MAX_HELD} bytes held")
                    )
            shown = self.decider.answer(leg.call, payload) if leg.filtered else payload
            if shown is not None:
                leg.to_caller.message(shown)
        if leg.to_caller.size > HIGH and not leg.to_caller.held:
            leg.unacked_callee += size
        else:
            self._ack(self.callee, callee_id, size)
        self._send(self.caller, leg.caller_id, leg.to_caller)
        self._release_ack(leg, towards_caller=True)
        return out

    def _answer_decided(self, leg: Leg, token: int, verdict: Verdict) -> list[Command]:
        """What a watch read was decided: what was held goes on, or the call ends."""
        if leg.answer_deciding != token or leg.state is not LegState.OPEN:
            return []
        leg.answer_deciding = None
        if not isinstance(verdict, Pass):
            refusal = verdict if isinstance(verdict, Refuse) else Refuse(
                "dockmoat: policy.error: a watched answer can only be passed or refused"
            )  # fmt: skip
            return self._refuse(leg, refusal)
        leg.to_caller.held = False
        self._send(self.caller, leg.caller_id, leg.to_caller)
        self._finish(leg)
        self._release_ack(leg, towards_caller=True)
        return []

    # --- shared helpers -----------------------------------------------------------------

    def _window(self, stream_id: int | None, *, towards_caller: bool) -> list[Command]:
        legs: Sequence[Leg]
        if stream_id:
            table = self.legs if towards_caller else self.by_callee
            found = table.get(stream_id)
            legs = [found] if found is not None else []
        else:
            legs = list(self.legs.values())
        for leg in legs:
            if leg.state is LegState.ANSWERED and towards_caller:
                self._send(self.caller, leg.caller_id, leg.to_caller)
                if leg.to_caller.sent_end:
                    self._drop(leg)
                continue
            if leg.state is not LegState.OPEN:
                continue
            if towards_caller:
                self._send(self.caller, leg.caller_id, leg.to_caller)
                self._finish(leg)
            elif leg.callee_id is not None:
                self._send(self.callee, leg.callee_id, leg.to_callee)
            self._release_ack(leg, towards_caller=towards_caller)
        return []

    def _send(self, conn: h2.connection.H2Connection, stream_id: int, out: Outbound) -> None:
        """As much of `out` as the window allows; the end only after all data."""
        if out.sent_end:
            out.clear()
            return
        if out.held:
            return
        while out.size:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                return
            if out.size < window and self._reading and not out.end and out.trailers is None:
                # Everything fits in a frame shorter than it may be: more of the read
                # being handled may join it (a message's tail and the next message, in one
                # frame instead of two); sent when the read is done.
                if not out.short:
                    out.short = True
                    self._short.append((conn, stream_id, out))
                return
            conn.send_data(stream_id, out.take(window))
        if out.trailers is not None:
            conn.send_headers(stream_id, out.trailers, end_stream=True)
            out.sent_end = True
        elif out.end:
            conn.end_stream(stream_id)
            out.sent_end = True

    def _send_short(self) -> None:
        """The short frames held back while a read was handled, for the calls still open."""
        short, self._short = self._short, []
        for conn, stream_id, out in short:
            out.short = False
            caller = conn is self.caller
            leg = (self.legs if caller else self.by_callee).get(stream_id)
            if leg is None or leg.state is not LegState.OPEN:
                continue  # refused or gone: what it had not sent is dropped, as always
            if out is (leg.to_caller if caller else leg.to_callee):
                self._send(conn, stream_id, out)

    def _finish(self, leg: Leg) -> None:
        if leg.to_caller.sent_end:
            leg.state = LegState.DONE
            self._drop(leg)

    def _drop(self, leg: Leg) -> None:
        if leg.follow:
            leg.follow = False
            self._ended.append(Ended(leg.call, leg.ok and leg.state is LegState.DONE))
        self.legs.pop(leg.caller_id, None)
        if leg.callee_id is not None:
            self.by_callee.pop(leg.callee_id, None)
        if leg.deciding is not None:
            self._pending.pop(leg.deciding, None)
        if leg.answer_deciding is not None:
            self._answer_pending.pop(leg.answer_deciding, None)
        leg.held.clear()

    def _ack(self, conn: h2.connection.H2Connection, stream_id: int, size: int) -> None:
        if size <= 0:
            return
        if self._reading:  # once per stream and read (`_send_acks`)
            key = (conn, stream_id)
            self._acks[key] = self._acks.get(key, 0) + size
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, KeyError):
            conn.acknowledge_received_data(size, stream_id)

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for (conn, stream_id), size in acks.items():
            self._ack(conn, stream_id, size)

    def _release_ack(self, leg: Leg, *, towards_caller: bool) -> None:
        """Acknowledge what was held back once the backlog went down."""
        if towards_caller:
            if leg.unacked_callee and leg.to_caller.size <= HIGH and leg.callee_id:
                size, leg.unacked_callee = leg.unacked_callee, 0
                self._ack(self.callee, leg.callee_id, size)
        elif leg.unacked_caller and leg.held_bytes + leg.to_callee.size <= HIGH:
            size, leg.unacked_caller = leg.unacked_caller, 0
            self._ack(self.caller, leg.caller_id, size)

    def _reset(self, conn: h2.connection.H2Connection, stream_id: int, code: int | None) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            conn.reset_stream(stream_id, error_code=code or h2.errors.ErrorCodes.CANCEL)

    def _refuse_headers(self, stream_id: int, verdict: Refuse) -> None:
        self.caller.send_headers(
            stream_id, grpc.trailers_only(verdict.status, verdict.message), end_stream=True
        )

    def _refuse(self, leg: Leg, verdict: Refuse) -> list[Command]:
        """End the call with a gRPC error towards the caller; cancel it at the callee."""
        log.info("BuildKit %s: %s refused: %s", self.tunnel, leg.call.method.short, verdict.message)
        if leg.state is LegState.OPEN and leg.watch is not None and leg.headers_sent:
            self._last_word(leg.to_caller, leg.watch, verdict)
        if leg.state is LegState.OPEN and leg.to_caller.size and leg.headers_sent:
            # What was read and passed before the refused message goes first, as far as
            # the window allows (a short frame held for the rest of the read too): the
            # caller's messages before the error are whole.
            reading, self._reading = self._reading, False
            try:
                self._send(self.caller, leg.caller_id, leg.to_caller)
            finally:
                self._reading = reading
        state = leg.state
        leg.state = LegState.REFUSED
        self._drop(leg)
        if state is not LegState.OPEN:
            return []
        if leg.callee_id is not None:
            self._reset(self.callee, leg.callee_id, h2.errors.ErrorCodes.CANCEL)
        if leg.to_caller.sent_end:
            return []
        if leg.headers_sent:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.caller.send_headers(
                    leg.caller_id,
                    grpc.status_headers(verdict.status, verdict.message),
                    end_stream=True,
                )
        else:
            self._refuse_headers(leg.caller_id, verdict)
        return []

    def _last_word(self, out: Outbound, watch: AnswerWatch, verdict: Refuse) -> None:
        """A watched call's refusal told in the call's own protocol too, before the gRPC
        error. Given the gRPC error alone, dockerd's FileSync receiver reported "context
        canceled" instead of the guard's reason for some refused 20.10 builds (0.5-5%,
        with the load); given a sender's error packet first, it reported the reason in
        every build measured. What was held is dropped first, and the callee's own end:
        nothing of the refused answer passes."""
        if out.sent_end:
            return
        last = watch.refused(verdict.message)
        if last is None:
            return
        if out.held:
            out.truncate(out.held_from)
            out.held = False
        out.trailers = None  # the callee's own end, if it came, is the refusal's now
        out.end = False
        out.message(last)

    def _answer(self, leg: Leg, verdict: Answer) -> None:
        self.caller.send_headers(
            leg.caller_id, [(":status", "200"), ("content-type", "application/grpc")]
        )
        out = Outbound(trailers=grpc.status_headers(grpc.OK, ""))
        for payload in verdict.payloads:
            out.message(payload)
        leg.to_caller = out
        leg.headers_sent = True
        self._send(self.caller, leg.caller_id, out)
        if out.sent_end:
            self._drop(leg)
        else:
            self.legs[leg.caller_id] = leg  # too big for the window now: sent as it opens
