"""The request exchange (gateway/sansio/request.py), scripted without a daemon or a
socket: events in, the one command out, for every way a request goes and ends
(mitmproxy's playbook idea). The decision is the real one (`pipeline.decide` with
the baseline policy), run here as the driver runs it."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ClientIdentity
from dockmoat.errors import UpstreamError
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.exchange import Exchange
from dockmoat.gateway.sansio.http import (
    BodyData,
    Invalid,
    MessageEnd,
    RequestEvent,
    RequestReader,
)
from dockmoat.gateway.sansio.request import (
    TUNNEL_ROUTES,
    WAITS_FOR,
    Bind,
    Close,
    Command,
    Connect,
    Decide,
    Finish,
    Forward,
    LocalProtocolError,
    Phase,
    Read,
    RefuseTunnel,
    Reply,
    RequestExchange,
)
from dockmoat.gateway.stages import Context, PermissivePolicy
from dockmoat.gateway.tunnel import TUNNELS
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import load_policy

POLICY = load_policy("baseline", env={})
CLIENT = ClientIdentity(listener="unix:///x")
MAX_BODY = 1024


class NoUpstream:
    async def request(self, *args: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        raise AssertionError("nothing is looked up without a stage")


def events_of(raw: bytes) -> list[RequestEvent]:
    return RequestReader().feed(raw)


def exchange(policy: object = POLICY, max_body: int = MAX_BODY) -> RequestExchange:
    return RequestExchange(Exchange(1, CLIENT), policy, None, max_body=max_body)  # type: ignore[arg-type]


def run_decision(command: Command, policy: object = POLICY) -> pipeline.Outcome:
    assert isinstance(command, Decide)
    ctx = Context(CLIENT, NoUpstream())  # type: ignore[arg-type]
    return asyncio.run(
        pipeline.decide(command.request, policy, None, ctx, form=command.form)  # type: ignore[arg-type]
    )


def play(raw: bytes, *, policy: object = POLICY) -> tuple[RequestExchange, Command]:
    """Feed a whole request as the driver would, up to the first command that is not
    about reading or deciding it."""
    ex = exchange(policy)
    events = events_of(raw)
    command = ex.start(events.pop(0))
    while True:
        if isinstance(command, Read):
            command = ex.read(events.pop(0) if events else None)
        elif isinstance(command, Decide):
            command = ex.decided(run_decision(command, policy))
        else:
            return ex, command


def test_a_bodiless_get_is_decided_connected_forwarded_and_finished() -> None:
    ex, command = play(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
    assert command == Connect()
    assert ex.phase is Phase.CONNECTING
    forward = ex.connected()
    assert isinstance(forward, Forward)
    assert forward.data.startswith(b"GET /v1.41/containers/json HTTP/1.1\r\n")
    assert not forward.streaming and forward.scan is None
    assert ex.record.decision == "allow" and ex.record.request is not None
    assert ex.answered(keep=True) == Finish(True)
    assert ex.phase is Phase.DONE


def test_a_denied_request_is_answered_and_recorded_without_a_connection() -> None:
    body = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    ex, command = play(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert isinstance(command, Reply)
    assert command.status == 403 and command.keep_alive and not command.linger
    assert ex.record.decision == "deny" and ex.record.status == 403
    assert ex.record.rule is not None and "privileged" in ex.record.rule


def test_a_body_the_decision_needs_is_read_whole_and_sent_with_its_length() -> None:
    body = json.dumps({"Image": "busybox"}).encode()
    raw = (
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    ex, command = play(raw)
    assert command == Connect()
    forward = ex.connected()
    assert isinstance(forward, Forward)
    head, _, sent = forward.data.partition(b"\r\n\r\n")
    assert b"Content-Length: %d\r\n" % len(sent) in head + b"\r\n"
    assert b"chunked" not in head.lower()
    # What went is what was decided: the client's body as the baseline rewrote it.
    assert json.loads(sent)["Image"] == "busybox" and "PidsLimit" in json.loads(sent)


def test_expect_100_continue_is_sent_before_a_body_the_decision_reads() -> None:
    ex = exchange()
    head = events_of(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )[0]
    assert ex.start(head) == Read(continue_first=True)
    assert ex.read(BodyData(b"{}")) == Read()
    assert isinstance(ex.read(MessageEnd()), Decide)


def test_a_body_over_the_limit_is_413_before_reading_and_lingers() -> None:
    head = events_of(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nContent-Length: 5000\r\n\r\n"
    )[0]
    ex = exchange()
    command = ex.start(head)
    assert isinstance(command, Reply)
    assert (command.status, command.keep_alive, command.linger) == (413, False, True)
    assert ex.record.decision == "refused"


def test_a_chunked_body_growing_over_the_limit_is_413() -> None:
    ex = exchange()
    head = events_of(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )[0]
    assert isinstance(ex.start(head), Read)
    assert ex.read(BodyData(b"x" * 1000)) == Read()
    command = ex.read(BodyData(b"x" * 100))
    assert isinstance(command, Reply) and command.status == 413 and command.linger


def test_an_unparsable_head_is_400_and_closes() -> None:
    ex = exchange()
    command = ex.start(Invalid("bad request line"))
    assert isinstance(command, Reply)
    assert (command.status, command.keep_alive) == (400, False)
    assert ex.record.decision == "refused"


def test_a_truncated_body_is_400() -> None:
    ex = exchange()
    head = events_of(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
        b"\r\nContent-Length: 10\r\n\r\n"
    )[0]
    ex.start(head)
    command = ex.read(Invalid("client closed mid-request"))
    assert isinstance(command, Reply) and command.status == 400


def test_a_bodiless_request_without_its_end_closes() -> None:
    ex = exchange()
    ex.start(events_of(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")[0])
    assert ex.read(None) == Close()


def test_a_dead_pooled_connection_is_retried_once_on_a_fresh_one_then_502() -> None:
    ex, command = play(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    assert command == Connect()
    ex.connected()
    assert ex.forward_failed(ConnectionResetError(), reused=True) == Connect(fresh=True)
    ex.connected()
    command = ex.forward_failed(ConnectionResetError(), reused=True)
    assert isinstance(command, Reply) and command.status == 502 and not command.keep_alive


def test_a_fresh_connection_that_fails_is_502_at_once() -> None:
    ex, _ = play(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    ex.connected()
    command = ex.forward_failed(ConnectionResetError(), reused=False)
    assert isinstance(command, Reply) and command.status == 502


def test_a_failure_after_part_of_the_answer_went_out_closes() -> None:
    ex, _ = play(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    ex.connected()
    ex.record.status = 200  # the driver relayed the answer's head
    assert ex.forward_failed(ConnectionResetError(), reused=True) == Close()


def test_no_daemon_connection_is_502_keeping_a_bodiless_client() -> None:
    ex, _ = play(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    command = ex.connect_failed(UpstreamError("no daemon"))
    assert isinstance(command, Reply)
    assert (command.status, command.keep_alive) == (502, True)


def test_a_head_request_is_answered_without_a_body() -> None:
    ex, _ = play(b"HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
    command = ex.connect_failed(UpstreamError("no daemon"))
    assert isinstance(command, Reply) and command.head_only


def test_a_streamed_body_is_decided_before_it_is_read_and_its_build_context_scanned() -> None:
    ex = exchange()
    head = events_of(
        b"POST /v1.41/build?t=job-a%2Fapp HTTP/1.1\r\nHost: d\r\n"
        b"Content-Type: application/x-tar\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n"
    )[0]
    command = ex.start(head)
    assert isinstance(command, Decide)  # nothing of the body read yet
    command = ex.decided(run_decision(command))
    assert isinstance(command, Bind)  # a build may name a session: its tenant must own it
    assert ex.bound(None) == Connect()
    forward = ex.connected()
    assert isinstance(forward, Forward)
    assert forward.streaming and forward.continue_first and forward.scan is not None
    assert b"Content-Length: 4096\r\n" in forward.data


def test_a_refused_binding_closes_and_lingers_over_the_unread_body() -> None:
    ex = exchange()
    head = events_of(
        b"POST /v1.41/build HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
        b"Content-Length: 10\r\n\r\n"
    )[0]
    command = ex.decided(run_decision(ex.start(head)))
    assert isinstance(command, Bind)
    command = ex.bound(Deny("build.session-owner", "not yours", status=403))
    assert isinstance(command, Reply)
    assert (command.status, command.keep_alive, command.linger) == (403, False, True)
    assert ex.record.decision == "refused" and ex.record.rule == "build.session-owner"


def test_a_streamed_body_refused_before_the_answer_is_answered_after_it_too_closes() -> None:
    deny = Deny("build.context", "no", status=400)
    ex = exchange()
    head = events_of(
        b"POST /v1.41/build HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
        b"Content-Length: 10\r\n\r\n"
    )[0]
    ex.decided(run_decision(ex.start(head)))
    ex.bound(None)
    ex.connected()
    command = ex.body_refused(deny)
    assert isinstance(command, Reply) and command.status == 400 and command.linger
    assert ex.record.decision == "refused"

    ex = exchange()
    ex.decided(run_decision(ex.start(head)))
    ex.bound(None)
    ex.connected()
    ex.record.status = 200
    assert ex.body_refused(deny) == Close()


SESSION = (
    b"POST /session HTTP/1.1\r\nHost: d\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
    b"X-Docker-Expose-Session-Uuid: abc\r\n\r\n"
)


def test_an_allowed_buildkit_session_claims_its_id_before_it_goes_upstream() -> None:
    ex, command = play(SESSION)
    assert isinstance(command, Bind)
    assert ex.bound(None) == Connect()


def test_a_refused_buildkit_upgrade_is_refused_in_its_own_protocol() -> None:
    ex, command = play(SESSION, policy=_DenyAll())
    assert isinstance(command, RefuseTunnel)
    assert command.decision.rule == "test.deny-all"
    assert ex.record.status == 101 and ex.record.decision == "deny"


def test_a_denied_upgrade_that_is_not_buildkit_closes_with_an_http_answer() -> None:
    _ex, command = play(
        b"POST /v1.41/containers/x/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
        b"Upgrade: tcp\r\nConnection: Upgrade\r\n\r\n",
        policy=_DenyAll(),
    )
    assert isinstance(command, Reply)
    assert command.status == 403 and not command.keep_alive


class _DenyAll(PermissivePolicy):
    def evaluate(self, request: object) -> Deny:  # type: ignore[override]
        return Deny("test.deny-all", "no", status=403)


def test_the_permissive_policy_forwards_without_reading_a_build_context() -> None:
    ex = exchange(PermissivePolicy())
    head = events_of(
        b"POST /v1.41/build HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
        b"Content-Length: 10\r\n\r\n"
    )[0]
    command = ex.start(head)
    assert isinstance(command, Decide)
    ctx = Context(CLIENT, NoUpstream())  # type: ignore[arg-type]
    outcome = asyncio.run(
        pipeline.decide(command.request, PermissivePolicy(), None, ctx, form=False)
    )
    assert isinstance(ex.decided(outcome), Bind)
    ex.bound(None)
    forward = ex.connected()
    assert isinstance(forward, Forward) and forward.scan is None and forward.streaming


def test_an_event_out_of_its_phase_is_a_local_error_not_a_silent_step() -> None:
    ex = exchange()
    with pytest.raises(LocalProtocolError):
        ex.connected()
    ex.start(events_of(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")[0])
    with pytest.raises(LocalProtocolError):
        ex.answered(keep=True)


def test_the_tunnel_routes_are_the_ones_the_gateway_reads_as_http2() -> None:
    assert frozenset(TUNNELS) == TUNNEL_ROUTES


def test_every_phase_is_in_the_table_and_only_done_takes_nothing() -> None:
    assert set(WAITS_FOR) == set(Phase)
    assert [phase for phase, events in WAITS_FOR.items() if not events] == [Phase.DONE]
    for events in WAITS_FOR.values():
        for name in events:
            assert callable(getattr(RequestExchange, name))


_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"])
_PATHS = st.sampled_from([
    "/_ping", "/v1.41/containers/json", "/v1.41/containers/create", "/v1.41/build",
    "/v1.41/images/create?fromImage=busybox", "/v1.41/containers/x/archive?path=/",
    "/v1.41/nope", "/session", "/v1.41/exec/x/start",
])  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    method=_METHODS,
    path=_PATHS,
    body=st.binary(max_size=64),
    chunked=st.booleans(),
    upgrade=st.booleans(),
    cut=st.integers(min_value=0, max_value=3),
)
def test_any_request_ends_in_one_terminal_command_or_a_forward(
    method: str, path: str, body: bytes, chunked: bool, upgrade: bool, cut: int
) -> None:
    """Whatever comes in, the exchange never asks for an event it then refuses, and
    what it ends with is a reply, a forward, a tunnel refusal or a close."""
    framing = (
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        if chunked and body
        else b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    raw = b"%s %s HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n%s%s" % (
        method.encode(), path.encode(),
        b"Upgrade: tcp\r\nConnection: Upgrade\r\n" if upgrade else b"", framing,
    )  # fmt: skip
    events = events_of(raw)
    events = events[: max(1, len(events) - cut)]
    ex = exchange()
    command = ex.start(events.pop(0))
    for _ in range(100):
        if isinstance(command, Read):
            command = ex.read(events.pop(0) if events else None)
        elif isinstance(command, Decide):
            command = ex.decided(run_decision(command))
        elif isinstance(command, Bind):
            command = ex.bound(None)
        elif isinstance(command, Connect):
            command = ex.connected()
        else:
            break
    assert isinstance(command, Reply | Forward | RefuseTunnel | Close)
    if isinstance(command, Reply):
        assert ex.phase is Phase.DONE and ex.record.status == command.status
    if isinstance(command, Forward):
        assert ex.phase is Phase.FORWARDING
        assert isinstance(ex.answered(keep=True), Finish)
