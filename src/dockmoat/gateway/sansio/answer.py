"""Sans-IO: one daemon answer, from its first byte to its end, as the client gets it.

The one implementation of relaying an answer. The connection's task drives it
(`Gateway._relay_answer`, awaiting each read) and so does the fast lane, from the
daemon connection's read callback (`fastlane.FastRelay`): bytes in (`feed`; b""
when the daemon closed), one `Step` out per read. No asyncio, no sockets.

How an answer is carried is chosen once per request (`carry_for`), and may change
once, when the head shows an error answer the stage rewrites:

    state    carries                                   chosen for
    RELAY    byte for byte, the daemon's own framing   answers nobody rewrites
    HOLD     whole, then the stage's rewrite           JSON answers the stage rewrites
    EVENTS   event by event (re-framed)                line streams the stage filters,
                                                       HEAD, hijacks and upgrades
    RELAY -> HOLD   the head is a 4xx/5xx and the stage rewrites this request's errors
                    (nothing has been sent yet: the head is held until complete)

`Step.status` is the answer's status once its head has been read. Until then a
broken answer has sent the client nothing, so the request may go again on a
fresh daemon connection or be answered 502; from then on a broken answer closes
the client's connection.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Final, NamedTuple, Protocol

from dockmoat.api.endpoints import HIJACKING
from dockmoat.api.gojson import compact
from dockmoat.api.request import ApiRequest
from dockmoat.errors import ProtocolError
from dockmoat.gateway.sansio.exchange import json_error, restaged_json
from dockmoat.gateway.sansio.http import (
    LAST_CHUNK,
    BodyData,
    HeldAnswer,
    Invalid,
    MessageEnd,
    RequestHead,
    ResponseFramer,
    ResponseHead,
    ResponseReader,
    UpgradeStart,
    chunk,
    serialise_response_head,
)
from dockmoat.gateway.stages import (
    UNTOUCHED,
    Context,
    Json,
    LineKind,
    ResponseKind,
    RouteFacts,
    Stage,
)

LINE_KINDS: Final = frozenset({"events", "load", "build"})
#: The answers that name bind sources as the daemon mounts them (pins, `PinSources`).
PINNED_ANSWERS: Final = frozenset({"containers.inspect", "containers.list"})


class PinSources(Protocol):
    """The gateway's bind pins (gateway/pins.py), seen from an answer."""

    @property
    def marker(self) -> bytes:
        """Bytes every answer naming a pin contains (the pins' folder)."""
        ...

    @property
    def active(self) -> bool:
        """Whether any pin exists (else no answer names one and none is held)."""
        ...

    def shown(self, container: dict[str, Any]) -> dict[str, Any]:
        """A container (inspect answer or list entry) naming the asked sources."""
        ...


class Carry(enum.Enum):
    RELAY = "relay"
    HOLD = "hold"
    EVENTS = "events"


def carry_for(head: RequestHead, route: str, kind: ResponseKind) -> Carry:
    """How the answer to this request is carried (the table in the module's docstring)."""
    if head.method == "HEAD" or head.upgrade or route in HIJACKING or kind in LINE_KINDS:
        return Carry.EVENTS
    return Carry.HOLD if kind == "json" else Carry.RELAY


class Switch(NamedTuple):
    """The daemon switched protocols: the raw (or HTTP/2) relay takes the connection.
    `upgraded`: a 101; otherwise dockerd's attach/exec `200` followed by raw bytes."""

    upgraded: bool
    leftover: bytes


class Step(NamedTuple):
    """What to do after one read (one per read of every answer, hence a NamedTuple).

    `send`: bytes for the client now. `status`: see the module's docstring. `end`: the
    answer is over; `keep_client` and `reusable` then say whether the client's and the
    daemon's connections stay open. `switch`: hand both connections to a raw relay
    after `send`. `broken`: why the answer cannot go on (`Answer.error` holds the
    exception when a stage's rewrite raised it).
    """

    send: bytes = b""
    status: int = 0
    end: bool = False
    keep_client: bool = False
    reusable: bool = False
    switch: Switch | None = None
    broken: str | None = None


_NOTHING: Final = Step()


class Answer:
    """One daemon answer to one request (a new one per request)."""

    __slots__ = (
        "_errors", "_framer", "_head_only", "_held", "_hijacking", "_hold", "_keep", "_kind",
        "_lines", "_max_head", "_max_held", "_mode", "_pins", "_reader", "_request", "_response",
        "_staged", "_upgrade", "carry", "error", "status",
    )  # fmt: skip

    def __init__(
        self,
        head: RequestHead,
        request: ApiRequest,
        staged: tuple[Stage, Context] | None,
        facts: RouteFacts,
        *,
        max_head: int,
        max_held: int,
        pins: PinSources | None = None,
    ) -> None:
        """`staged`: the listener's stage and this exchange's context, when the stage
        applies; `facts`: what it said of this request (`Stage.facts`); `pins`: the
        gateway's bind pins, whose sources a container's inspect answer names again."""
        if staged is None:
            facts = UNTOUCHED
        self._request = request
        self._staged = staged
        kind = facts.answer
        active = pins is not None and pins.active and request.route.name in PINNED_ANSWERS
        self._pins = pins if active else None
        if self._pins is not None and kind == "none":
            kind = "json"
        self._kind: ResponseKind = kind
        self._errors = facts.errors
        self._keep = head.keep_alive
        self._upgrade = head.upgrade
        self._head_only = head.method == "HEAD"
        self._hijacking = request.route.name in HIJACKING
        self._max_head = max_head
        self._max_held = max_held
        self.carry = carry_for(head, request.route.name, kind)
        self.status = 0
        self.error: BaseException | None = None
        # RELAY
        self._framer: ResponseFramer | None = None
        self._held = b""  # RELAY: the head so far
        # HOLD
        self._hold: HeldAnswer | None = None
        # EVENTS
        self._reader: ResponseReader | None = None
        self._response: ResponseHead | None = None
        self._mode: ResponseKind | str = "none"  # what the head made of the stage's kind
        self._lines = bytearray()
        if self.carry is Carry.RELAY:
            self._framer = ResponseFramer()
        elif self.carry is Carry.HOLD:
            self._hold = HeldAnswer()
        else:
            self._reader = ResponseReader(head_request=self._head_only, max_head=max_head)

    @property
    def follows_client(self) -> bool:
        """An events stream the stage filters may write nothing for hours: its reads
        stop when the client leaves (as dockerd ends a stream on the client's EOF)."""
        return self._mode == "events"

    def feed(self, data: bytes) -> Step:
        """One read from the daemon (b"": it closed)."""
        carry = self.carry
        if carry is Carry.RELAY:
            return self._relay(data)
        if carry is Carry.HOLD:
            return self._held_answer(data)
        return self._events(data)

    # --- RELAY ---

    def _relay(self, data: bytes) -> Step:
        framer = self._framer
        assert framer is not None
        if data:
            framer.feed(data)
        else:
            framer.feed_eof()
        if framer.invalid is not None:
            return Step(status=self.status, broken=framer.invalid)
        if self.status == 0:
            if not framer.head_done:
                self._held += data
                if len(self._held) > self._max_head:
                    return Step(broken="daemon answer head too large")
                return _NOTHING
            if self._held:
                data, self._held = self._held + data, b""
            if self._errors and framer.status >= 400:
                # An error the stage rewrites: held whole from its first byte instead.
                self.carry = Carry.HOLD
                self._kind = "none"  # its 2xx rewrite does not apply
                self._hold = HeldAnswer()
                self._framer = None
                return self._held_answer(data)
            self.status = framer.status
        keep = framer.keep_alive
        return Step(data, self.status, framer.done, keep and self._keep, keep)

    # --- HOLD ---

    def _held_answer(self, data: bytes) -> Step:
        held = self._hold
        assert held is not None
        if data:
            held.feed(data)
        else:
            held.feed_eof()
        if held.invalid is not None:
            return Step(status=self.status, broken=held.invalid)
        if self.status == 0 and held.head_done:
            self.status = held.status
        if held.size > self._max_held:
            return Step(status=self.status, broken="daemon answer too large to filter")
        if not held.done:
            return Step(status=self.status)
        status = held.status
        response = held.head(self._max_head) if status >= 400 else None
        out: bytes | None = None
        if (self._kind == "json" and 200 <= status < 300) or (
            self._errors and response is not None and json_error(response)
        ):
            try:
                body = self._restaged(status, b"".join(held.body))
                if body is not None:
                    response = response or held.head(self._max_head)
                    if response is None:
                        raise ProtocolError("daemon answer head does not parse")
                    out = serialise_response_head(response, content_length=len(body)) + body
            except Exception as error:  # noqa: BLE001 - fail closed: the unfiltered answer is never sent
                self.error = error
                return Step(status=status, broken="rewriting the answer failed")
        if out is None:
            out = b"".join(held.raw)  # what the stage does not change: relayed as read
        keep = held.keep_alive
        return Step(out, status, True, keep and self._keep, keep)

    # --- EVENTS ---

    def _events(self, data: bytes) -> Step:
        reader = self._reader
        assert reader is not None
        try:
            return self._event_step(reader.feed(data) if data else reader.feed_eof(), data)
        except Exception as error:  # noqa: BLE001 - a stage's rewrite raised: fail closed
            self.error = error
            return Step(status=self.status, broken="rewriting the answer failed")

    def _event_step(self, events: list[Any], data: bytes) -> Step:
        out: list[bytes] = []  # everything one read produces goes out in one write
        response = self._response
        for event in events:
            if isinstance(event, ResponseHead):
                response = self._response = event
                self.status = event.status
                if event.status == 101:
                    continue  # sent when the switch is confirmed (UpgradeStart)
                if self._hijacking and event.until_close and not self._upgrade:
                    # dockerd hijacks without an Upgrade header too: 200, then raw.
                    out.append(serialise_response_head(event))
                    return Step(b"".join(out), self.status, switch=Switch(False, b""))
                self._mode = self._mode_for(event)
                if self._mode not in ("json", "lines_at_end"):
                    out.append(serialise_response_head(event))
            elif isinstance(event, BodyData):
                assert response is not None
                mode = self._mode
                if mode in ("json", "lines_at_end"):
                    self._lines += event.data
                    if len(self._lines) > self._max_held:
                        return Step(status=self.status, broken="daemon answer too large to filter")
                elif mode in LINE_KINDS:
                    self._lines += event.data
                    lines = self._filter_lines(mode)
                    if lines:
                        out.append(_frame(response, lines))
                else:
                    out.append(_frame(response, event.data))
            elif isinstance(event, MessageEnd):
                if response is None:
                    return Step(broken="daemon answer without a head")
                self._end(response, out)
                if response.status == 101:
                    continue
                until_close = response.until_close and not self._head_only
                reusable = response.keep_alive and not until_close
                keep = self._keep and reusable and not self._upgrade
                return Step(b"".join(out), self.status, True, keep, reusable)
            elif isinstance(event, UpgradeStart):
                if response is None or response.status != 101:
                    broken = "daemon switched protocols without a 101"
                    return Step(status=self.status, broken=broken)
                out.append(serialise_response_head(response))
                return Step(b"".join(out), self.status, switch=Switch(True, event.leftover))
            elif isinstance(event, Invalid):
                return Step(status=self.status if response is not None else 0, broken=event.reason)
        if not data and self._reader is not None and self._reader.done:
            return Step(b"".join(out), self.status, True)  # closed: nothing kept
        return Step(b"".join(out), self.status)

    def _mode_for(self, response: ResponseHead) -> ResponseKind | str:
        if 200 <= response.status < 300:
            mode: ResponseKind | str = self._kind
        elif self._errors and json_error(response):
            mode = "json"  # the stage rewrites error messages (tenancy's names)
        else:
            mode = "none"
        if mode in LINE_KINDS and not response.chunked and response.content_length is not None:
            return "lines_at_end"
        return mode

    def _end(self, response: ResponseHead, out: list[bytes]) -> None:
        """What the end of the message adds: a held body rewritten, the last lines."""
        mode = self._mode
        if mode == "json":
            body = self._restaged(response.status, bytes(self._lines))
            payload = bytes(self._lines) if body is None else body
            out.append(serialise_response_head(response, content_length=len(payload)) + payload)
        elif mode == "lines_at_end":
            self._lines += b"\n"
            payload = self._filter_lines(self._kind)
            out.append(serialise_response_head(response, content_length=len(payload)) + payload)
        elif mode in LINE_KINDS and self._lines:
            self._lines += b"\n"
            lines = self._filter_lines(mode)
            if lines:
                out.append(_frame(response, lines))
        if response.chunked and mode != "json" and not self._head_only:
            out.append(LAST_CHUNK)

    def _filter_lines(self, kind: ResponseKind | str) -> bytes:
        """Complete lines of a JSON stream, each through the stage; the rest stays held."""
        buffer = self._lines
        end = buffer.rfind(b"\n")
        if end < 0:
            return b""
        complete = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        staged = self._staged
        line_kind: LineKind | None = kind if kind in LINE_KINDS else None  # type: ignore[assignment]
        out = bytearray()
        for line in complete.splitlines():
            if not line.strip():
                continue
            if staged is None or line_kind is None:
                out += line + b"\n"
                continue
            try:
                item = json.loads(line)
            except ValueError:
                continue  # fail closed: what cannot be read is not shown
            stage, ctx = staged
            changed = stage.on_line(ctx, self._request, line_kind, item)
            if changed is not None:
                out += compact(changed).encode() + b"\n"
        return bytes(out)

    def _restaged(self, status: int, body: bytes) -> bytes | None:
        """A held JSON answer as the stage rewrites it and, where the body names a pin
        folder, with each pin named by the source the client asked for."""
        staged, pins = self._staged, self._pins
        if pins is None or status != 200 or pins.marker not in body:
            pins = None
        if staged is None and pins is None:
            return None
        request = self._request

        def rewrite(answer: Json) -> Json:
            if staged is not None:
                answer = staged[0].on_json_response(staged[1], request, status, answer)
            if pins is not None:
                if isinstance(answer, dict):
                    answer = pins.shown(answer)
                elif isinstance(answer, list):
                    answer = [pins.shown(c) if isinstance(c, dict) else c for c in answer]
            return answer

        return restaged_json(body, rewrite)


def _frame(response: ResponseHead, data: bytes) -> bytes:
    return chunk(data) if response.chunked else data
