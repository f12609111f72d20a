"""The answer relay (gateway/sansio/answer.py), scripted without a daemon: daemon bytes in,
steps out, for each way an answer is carried and each way it ends or breaks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import classify
from dockmoat.gateway.sansio.answer import Answer, Carry, Step, carry_for
from dockmoat.gateway.sansio.http import RequestHead, RequestReader
from dockmoat.gateway.stages import Context, Json, LineKind, ResponseKind, RouteFacts, Stage

PING = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 2\r\n\r\nOK"
)
ERROR = b'{"message":"No such container: job_a"}\n'
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(ERROR), ERROR)
)
LIST = b'[{"Id":"a","mine":true},{"Id":"b"}]\n'
LIST_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(LIST), LIST)
)


def _head(method: str, target: str, extra: bytes = b"") -> RequestHead:
    events = RequestReader().feed(b"%s %s HTTP/1.1\r\nHost: docker\r\n%s\r\n" % (
        method.encode(), target.encode(), extra))  # fmt: skip
    head = events[0]
    assert isinstance(head, RequestHead)
    return head


def _request(head: RequestHead) -> ApiRequest:
    path, version, route = classify(head.method, head.target)
    return ApiRequest(head.method, head.target, path, version, route, {}, (),
                      ClientIdentity(listener="unix:///x"))  # fmt: skip


class Mine(Stage):
    """Keeps what is "mine", renames the job's prefix in error messages, drops
    events of others; raises when asked to (a stage's bug)."""

    def __init__(self, *, raises: bool = False) -> None:
        self.raises = raises

    def on_json_response(
        self, ctx: Context, request: ApiRequest, status: int, answer: Json
    ) -> Json:
        if self.raises:
            raise RuntimeError("stage bug")
        if status >= 400:
            return {"message": answer["message"].replace("job_", "")}
        return [item for item in answer if item.get("mine")]

    def on_line(self, ctx: Context, request: ApiRequest, kind: LineKind, line: Json) -> Json:
        if self.raises:
            raise RuntimeError("stage bug")
        return line if kind == "events" and line.get("mine") else None


class NoUpstream:
    async def request(self, *args: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        raise AssertionError("the answer relay looks nothing up")


def answer(
    method: str,
    target: str,
    kind: ResponseKind = "none",
    *,
    errors: bool = False,
    stage: Any = None,
    extra: bytes = b"",
    max_held: int = 1 << 20,
) -> Answer:
    head = _head(method, target, extra)
    request = _request(head)
    staged = (stage or Mine(), Context(request.client, NoUpstream()))
    return Answer(head, request, staged, RouteFacts(answer=kind, errors=errors), max_head=4096,
                  max_held=max_held)  # fmt: skip


def play(relay: Answer, *reads: bytes) -> list[Step]:
    return [relay.feed(data) for data in reads]


def sent(steps: list[Step]) -> bytes:
    return b"".join(step.send for step in steps)


def test_carry_table() -> None:
    def carry(method: str, target: str, kind: ResponseKind = "none") -> Carry:
        head = _head(method, target)
        return carry_for(head, _request(head).route.name, kind)

    assert carry("GET", "/containers/json") is Carry.RELAY
    assert carry("GET", "/containers/json", "json") is Carry.HOLD
    assert carry("GET", "/events", "events") is Carry.EVENTS
    assert carry("HEAD", "/containers/a/archive?path=/") is Carry.EVENTS
    assert carry("POST", "/containers/a/attach?stream=1") is Carry.EVENTS


def test_relay_holds_bytes_until_the_head_then_relays_as_read() -> None:
    first, rest = play(answer("GET", "/_ping"), PING[:20], PING[20:])
    assert (first.send, first.status, first.end) == (b"", 0, False)
    assert rest.send == PING and rest.status == 200 and rest.end
    assert rest.keep_client and rest.reusable


def test_relay_keep_alive_is_both_sides() -> None:
    (step,) = play(answer("GET", "/_ping", extra=b"Connection: close\r\n"), PING)
    assert step.end and step.reusable and not step.keep_client


def test_relay_breaks_before_or_after_the_head() -> None:
    (early,) = play(answer("GET", "/_ping"), b"")
    assert early.broken is not None and early.status == 0  # nothing sent: retry or 502
    huge = answer("GET", "/_ping").feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 5000)
    assert huge.broken == "daemon answer head too large" and huge.status == 0
    _, late = play(
        answer("GET", "/_ping"), b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b""
    )
    assert late.broken is not None and late.status == 200  # something was relayed: close
    body, last = play(answer("GET", "/_ping"), b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nab", b"")
    assert body.send and not body.end
    assert last.end and not last.reusable and not last.keep_client and last.broken is None


def test_an_error_the_stage_rewrites_is_held_from_its_first_byte() -> None:
    relay = answer("GET", "/containers/job_a/json", errors=True)
    steps = play(relay, NOT_FOUND[:30], NOT_FOUND[30:90], NOT_FOUND[90:])
    assert relay.carry is Carry.HOLD
    assert all(not step.send for step in steps[:-1]) and steps[-1].end
    out = sent(steps)
    assert out.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"job_" not in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == {"message": "No such container: a"}
    # Not rewritten when the stage does not ask for it: relayed as read.
    (plain,) = play(answer("GET", "/containers/job_a/json"), NOT_FOUND)
    assert plain.send == NOT_FOUND and plain.status == 404 and plain.end


def test_held_json_rewritten_or_relayed_as_read() -> None:
    (step,) = play(answer("GET", "/containers/json", "json"), LIST_ANSWER)
    head, body = step.send.split(b"\r\n\r\n", 1)
    assert json.loads(body) == [{"Id": "a", "mine": True}]
    assert b"Content-Length: %d" % len(body) in head and step.end and step.keep_client
    empty = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n[]\n"
    (same,) = play(answer("GET", "/containers/json", "json"), empty)
    assert same.send == empty  # the stage left it equal: the daemon's own bytes


def test_held_answer_fails_closed() -> None:
    relay = answer("GET", "/containers/json", "json", stage=Mine(raises=True))
    (step,) = play(relay, LIST_ANSWER)
    assert step.broken and not step.send and step.status == 200
    assert isinstance(relay.error, RuntimeError)
    (big,) = play(answer("GET", "/containers/json", "json", max_held=10), LIST_ANSWER)
    assert big.broken == "daemon answer too large to filter" and not big.send


def test_events_are_filtered_line_by_line_and_rechunked() -> None:
    relay = answer("GET", "/events", "events")
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    lines = b'{"mine":true,"id":1}\n{"id":2}\n{"mine":true,'
    first = relay.feed(head + b"%x\r\n%s\r\n" % (len(lines), lines))
    assert relay.follows_client and first.status == 200 and not first.end
    assert first.send.endswith(b'\r\n{"mine":true,"id":1}\n\r\n') and b'"id":2' not in first.send
    tail = b'"id":3}\n'
    last = relay.feed(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    line = b'{"mine":true,"id":3}\n'
    assert last.send == b"%x\r\n%s\r\n0\r\n\r\n" % (len(line), line)
    assert last.end and last.keep_client


def test_a_line_filter_that_raises_closes() -> None:
    relay = answer("GET", "/events", "events", stage=Mine(raises=True))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    step = relay.feed(head + b"3\r\n{}\n\r\n")
    assert step.broken and isinstance(relay.error, RuntimeError)


def test_head_answer_without_length_keeps_the_connection() -> None:
    """dockerd answers HEAD .../archive with 200 and no Content-Length: the answer ends
    at its head (not at close), and both connections stay open (the `docker cp` bug)."""
    stat = b"HTTP/1.1 200 OK\r\nX-Docker-Container-Path-Stat: e30=\r\nContent-Type: x\r\n\r\n"
    (step,) = play(answer("HEAD", "/containers/a/archive?path=/"), stat)
    assert step.end and step.keep_client and step.reusable and step.send.startswith(b"HTTP/1.1 200")


def test_hijack_and_upgrade_switch() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nhello"
    (hijack,) = play(answer("POST", "/containers/a/attach?stream=1&stdout=1"), raw)
    assert hijack.switch is not None and not hijack.switch.upgraded
    assert hijack.send.startswith(b"HTTP/1.1 200 OK\r\n")
    upgrade = (
        b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        b"Content-Type: application/vnd.docker.raw-stream\r\n\r\nleft"
    )
    relay = answer("POST", "/containers/a/attach?stream=1",
                   extra=b"Connection: Upgrade\r\nUpgrade: tcp\r\n")  # fmt: skip
    (switched,) = play(relay, upgrade)
    assert switched.switch is not None and switched.switch.upgraded
    assert switched.switch.leftover == b"left" and switched.status == 101
    assert switched.send.startswith(b"HTTP/1.1 101 UPGRADED\r\n")


@pytest.mark.parametrize("kind", ["none", "json"])
def test_a_daemon_that_closes_first_sends_nothing(kind: ResponseKind) -> None:
    (step,) = play(answer("GET", "/containers/json", kind), b"")
    assert step.broken is not None and step.status == 0 and not step.send


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=len(LIST_ANSWER)), st.sampled_from(["none", "json"]))
def test_any_split_of_the_reads_gives_the_same_answer(size: int, kind: ResponseKind) -> None:
    whole = play(answer("GET", "/containers/json", kind), LIST_ANSWER)
    pieces = [LIST_ANSWER[i : i + size] for i in range(0, len(LIST_ANSWER), size)]
    split = play(answer("GET", "/containers/json", kind), *pieces)
    assert sent(split) == sent(whole) and split[-1].end and split[-1].keep_client


class Pins:
    """Shows `/pin` as `/asked` (gateway/pins.py's `shown`, in miniature)."""

    marker = b"/pin"
    active = True

    def shown(self, container: dict[str, Any]) -> dict[str, Any]:
        if container.get("Mounts") == [{"Source": "/pin"}]:
            return {**container, "Mounts": [{"Source": "/asked"}]}
        return container


def _json_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)  # fmt: skip


def test_an_inspect_answer_names_the_asked_source_not_its_pin() -> None:
    """With bind pins on, a container's inspect answer is held and shows the source the
    client asked for, with or without a stage; one naming no pin goes as read."""
    head = _head("GET", "/containers/a/json")
    request = _request(head)
    pinned = _json_answer(b'{"Id":"a","Mounts":[{"Source":"/pin"}]}\n')
    plain = _json_answer(b'{"Id":"a","Mounts":[{"Source":"/x"}]}\n')
    for staged in (None, (Stage(), Context(request.client, NoUpstream()))):
        relay = Answer(head, request, staged, RouteFacts(), max_head=4096, max_held=1 << 20,
                       pins=Pins())  # fmt: skip
        assert relay.carry is Carry.HOLD
        (step,) = play(relay, pinned)
        assert json.loads(step.send.split(b"\r\n\r\n", 1)[1])["Mounts"] == [{"Source": "/asked"}]
        again = Answer(head, request, staged, RouteFacts(), max_head=4096, max_held=1 << 20,
                       pins=Pins())  # fmt: skip
        assert play(again, plain)[0].send == plain
    listing = _head("GET", "/containers/json")
    relay = Answer(listing, _request(listing), None, RouteFacts(), max_head=4096,
                   max_held=1 << 20, pins=Pins())  # fmt: skip
    (step,) = play(relay, _json_answer(b'[{"Id":"a","Mounts":[{"Source":"/pin"}]},{"Id":"b"}]'))
    assert json.loads(step.send.split(b"\r\n\r\n", 1)[1]) == [
        {"Id": "a", "Mounts": [{"Source": "/asked"}]},
        {"Id": "b"},
    ]
    other = _head("GET", "/containers/a/top")
    assert Answer(other, _request(other), None, RouteFacts(), max_head=4096, max_held=1 << 20,
                  pins=Pins()).carry is Carry.RELAY  # fmt: skip
