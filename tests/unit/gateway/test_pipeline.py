"""The decision point: routing, parameters, bodies, stage then policy, fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.errors import ProtocolError, UpstreamError
from dockmoat.gateway import pipeline
from dockmoat.gateway.fastlane import run_inline
from dockmoat.gateway.sansio.http import RequestHead, RequestReader
from dockmoat.gateway.stages import Context, PermissivePolicy, Stage
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from support.upstream import NoUpstream

CLIENT = ClientIdentity(listener="unix:///t.sock", tenant="t1")


def head_of(raw: bytes) -> RequestHead:
    (head, *_rest) = RequestReader().feed(raw)
    assert isinstance(head, RequestHead)
    return head


class BodyPolicy:
    """A real policy object for these tests: wants bodies, records what it saw."""

    def __init__(self, decision: Decision | None = None, fail: bool = False) -> None:
        self.seen: list[ApiRequest] = []
        self.decision = decision or Allow(rule="test")
        self.fail = fail

    def body_needed(self, route: Route) -> bool:
        return route.name == "containers.create"

    def evaluate(self, request: ApiRequest) -> Decision:
        self.seen.append(request)
        if self.fail:
            raise RuntimeError("bug in a rule")
        return self.decision


def decide(
    request: ApiRequest, policy: Any, stage: Any = None, form: bool = False
) -> pipeline.Outcome:
    ctx = Context(request.client, NoUpstream())
    return asyncio.run(pipeline.decide(request, policy, stage, ctx, form=form))


def test_plan_routes_and_reads_query() -> None:
    head = head_of(b"GET /v1.41/containers/json?all=1&all=0 HTTP/1.1\r\nHost: d\r\n\r\n")
    planned = pipeline.plan(head, CLIENT, PermissivePolicy())
    assert planned.request.route.name == "containers.list"
    assert planned.request.param("all") == "1"
    assert planned.body_plan == "none"


def test_plan_buffers_inspected_bodies_and_streams_build() -> None:
    create = head_of(b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}")
    assert pipeline.plan(create, CLIENT, BodyPolicy()).body_plan == "buffer"
    build = head_of(b"POST /build HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\nxx")
    assert pipeline.plan(build, CLIENT, BodyPolicy()).body_plan == "stream"


def test_form_body_is_read_and_wins() -> None:
    head = head_of(
        b"POST /containers/x/kill?signal=TERM HTTP/1.1\r\nHost: d\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\n"
    )
    planned = pipeline.plan(head, CLIENT, PermissivePolicy())
    assert planned.body_plan == "buffer"
    request = pipeline.with_body(planned, b"signal=KILL")
    assert request.param("signal") == "KILL"
    outcome = decide(request, PermissivePolicy(), form=True)
    assert outcome.body == b""
    assert outcome.target == "/containers/x/kill?signal=KILL&signal=TERM"


def test_multipart_and_bad_query_are_refused() -> None:
    with pytest.raises(ProtocolError):
        multipart = b"POST /build HTTP/1.1\r\nHost: d\r\nContent-Type: multipart/form-data\r\n\r\n"
        pipeline.plan(head_of(multipart), CLIENT, PermissivePolicy())
    with pytest.raises(ProtocolError):
        pipeline.plan(head_of(b"GET /info?a=1;b=2 HTTP/1.1\r\nHost: d\r\n\r\n"), CLIENT,
                      PermissivePolicy())  # fmt: skip


def test_json_body_is_decoded_go_style() -> None:
    planned = pipeline.plan(
        head_of(b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 20\r\n\r\n"),
        CLIENT, BodyPolicy(),
    )  # fmt: skip
    request = pipeline.with_body(planned, b'{"Image":"busybox"}')
    assert request.body_json == {"Image": "busybox"}
    with pytest.raises(ProtocolError):
        pipeline.with_body(planned, b'{"Image":"a","image":"b"}')


def test_policy_exception_denies() -> None:
    request = pipeline.plan(head_of(b"GET /info HTTP/1.1\r\nHost: d\r\n\r\n"), CLIENT,
                            PermissivePolicy()).request  # fmt: skip
    outcome = decide(request, BodyPolicy(fail=True))
    assert isinstance(outcome.decision, Deny)
    assert outcome.decision.rule == pipeline.INTERNAL_ERROR


class DecidingStage(Stage):
    def __init__(self, decision: Decision | None = None, fail: bool = False) -> None:
        self.decision = decision
        self.fail = fail

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        if self.fail:
            raise RuntimeError("look-up failed")
        return self.decision or Allow()


def test_stage_runs_before_policy_and_its_rewrite_is_what_policy_sees() -> None:
    request = pipeline.plan(head_of(b"GET /v1.41/containers/web/json HTTP/1.1\r\nHost: d\r\n\r\n"),
                            CLIENT, PermissivePolicy()).request  # fmt: skip
    policy = BodyPolicy()
    stage = DecidingStage(
        Rewrite(rule="tenancy.resolve", notes=("web -> abc",), path="/containers/abc/json")
    )
    outcome = decide(request, policy, stage)
    assert policy.seen[0].route.params == {"name": "abc"}
    assert outcome.target == "/v1.41/containers/abc/json"
    assert isinstance(outcome.decision, Rewrite)


def test_stage_deny_skips_policy_and_stage_error_denies() -> None:
    request = pipeline.plan(head_of(b"GET /containers/x/json HTTP/1.1\r\nHost: d\r\n\r\n"),
                            CLIENT, PermissivePolicy()).request  # fmt: skip
    policy = BodyPolicy()
    outcome = decide(
        request, policy, DecidingStage(Deny("tenancy.not-found", "No such container: x", 404))
    )
    assert isinstance(outcome.decision, Deny) and outcome.decision.status == 404
    assert policy.seen == []
    assert isinstance(decide(request, policy, DecidingStage(fail=True)).decision, Deny)


def test_rewrite_to_another_endpoint_is_denied() -> None:
    request = pipeline.plan(head_of(b"GET /containers/x/json HTTP/1.1\r\nHost: d\r\n\r\n"),
                            CLIENT, PermissivePolicy()).request  # fmt: skip
    stage = DecidingStage(Rewrite(rule="bad", notes=(), path="/containers/x/export"))
    assert isinstance(decide(request, BodyPolicy(), stage).decision, Deny)


def test_policy_body_rewrite_is_forwarded_compact() -> None:
    planned = pipeline.plan(
        head_of(b"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 20\r\n\r\n"),
        CLIENT, BodyPolicy(),
    )  # fmt: skip
    request = pipeline.with_body(planned, b'{ "Image" : "busybox" }')
    policy = BodyPolicy(
        Rewrite(
            rule="pids",
            notes=("PidsLimit=4096",),
            body_json={"Image": "busybox", "HostConfig": {"PidsLimit": 4096}},
        )
    )
    outcome = decide(request, policy)
    assert outcome.body is not None
    assert json.loads(outcome.body) == {"Image": "busybox", "HostConfig": {"PidsLimit": 4096}}
    assert b" " not in outcome.body


@pytest.mark.parametrize(
    "policy",
    [
        BodyPolicy(),
        BodyPolicy(Deny("no", "refused")),
        BodyPolicy(Rewrite(rule="pids", notes=("n",), body_json={"Image": "b"})),
        BodyPolicy(fail=True),
    ],
    ids=["allow", "deny", "rewrite", "error"],
)
def test_decide_without_a_stage_never_suspends(policy: BodyPolicy) -> None:
    """With no stage and no `after` hook nothing is awaited: the fast lane drives the
    one `decide` to its end from a read callback (`fastlane.run_inline`)."""
    planned = pipeline.plan(
        head_of(b"POST /v1.41/containers/create?name=a HTTP/1.1\r\nHost: d\r\n"
                b"Content-Length: 2\r\n\r\n{}"),
        CLIENT, policy,
    )  # fmt: skip
    request = pipeline.with_body(planned, b"{}")
    ctx = Context(request.client, NoUpstream())
    inline = run_inline(pipeline.decide(request, policy, None, ctx, form=False))
    assert inline is not None
    assert inline == decide(request, policy)


def test_target_reencodes_the_routed_path() -> None:
    request = pipeline.plan(
        head_of(b"GET http://x/v1.41./images/a%2Fb%20c/json?platform=%20 HTTP/1.1\r\n"
                b"Host: d\r\n\r\n"),
        CLIENT, PermissivePolicy(),
    ).request  # fmt: skip
    outcome = decide(request, PermissivePolicy())
    assert outcome.target == "/v1.41./images/a/b%20c/json?platform=%20"


_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
_PIECES = [*"/v1.4%2Fcontainersjon?&=;+abx#:", "%2e", "%zz", "//", "..", "containers", "json"]
_TARGET = st.lists(st.sampled_from(_PIECES), max_size=20).map(lambda t: "/" + "".join(t))


@settings(max_examples=300)
@given(_METHODS, _TARGET)
def test_every_forwarded_request_is_classified(method: str, target: str) -> None:
    raw = f"{method} {target} HTTP/1.1\r\nHost: d\r\n\r\n".encode()
    events = RequestReader().feed(raw)
    head = events[0]
    if not isinstance(head, RequestHead):
        return
    try:
        planned = pipeline.plan(head, CLIENT, PermissivePolicy())
    except ProtocolError:
        return
    outcome = decide(planned.request, PermissivePolicy())
    assert planned.request.route.resource
    # What goes upstream routes to the same endpoint as what was evaluated.
    with contextlib.suppress(ProtocolError):
        from dockmoat.api.routing import classify

        _p, _v, again = classify(method, outcome.target)
        assert again == planned.request.route


def test_fields_the_reference_table_lacks_are_refused_unread() -> None:
    """A query parameter or body field dockmoat does not model is a 400 naming it,
    whatever the policy (permissive too) and before any stage sees it."""
    raw = b'{"Image": "busybox", "HostConfig": {"Privilegd": true}}'
    head = head_of(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(raw)
    )
    planned = pipeline.plan(head, CLIENT, PermissivePolicy())
    assert planned.body_plan == "buffer"  # the table lists create's body: it is read
    request = pipeline.with_body(planned, raw)
    seen: list[ApiRequest] = []

    class Seeing(Stage):
        async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
            seen.append(request)
            return Allow()

    outcome = decide(request, PermissivePolicy(), Seeing())
    assert isinstance(outcome.decision, Deny)
    assert outcome.decision.status == 400
    assert outcome.decision.rule == "api.unmodeled"
    assert "'HostConfig.Privilegd'" in outcome.decision.message
    assert seen == []
    head = head_of(b"GET /v1.41/containers/json?all=1&limitt=3 HTTP/1.1\r\nHost: d\r\n\r\n")
    request = pipeline.plan(head, CLIENT, PermissivePolicy()).request
    now = decide(request, PermissivePolicy())
    assert isinstance(now.decision, Deny) and "'limitt'" in now.decision.message
    head = head_of(b"GET /v1.41/containers/json?all=1&limit=3 HTTP/1.1\r\nHost: d\r\n\r\n")
    request = pipeline.plan(head, CLIENT, PermissivePolicy()).request
    assert not isinstance(decide(request, PermissivePolicy()).decision, Deny)


class UnreachableStage(Stage):
    """A stage whose look-up finds the daemon gone (restarting): found by the soak suite,
    where every request needing a look-up was a 403 internal-error while dockerd restarted."""

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        raise UpstreamError("the Docker daemon at unix:///d.sock is not reachable")


def test_daemon_unreachable_during_the_stage_is_502_not_a_denial() -> None:
    target = b"DELETE /v1.47/containers/web?force=1 HTTP/1.1\r\nHost: d\r\n\r\n"
    request = pipeline.plan(head_of(target), CLIENT, PermissivePolicy()).request
    outcome = decide(request, BodyPolicy(), UnreachableStage())
    assert isinstance(outcome.decision, Deny)
    assert outcome.decision.status == 502
    assert outcome.decision.rule == pipeline.UNREACHABLE
    assert "not reachable" in outcome.decision.message
    assert pipeline.describe(outcome.decision) == "error"  # the audit's word for a 5xx
    assert outcome.target == "" and outcome.body is None  # nothing forwarded
