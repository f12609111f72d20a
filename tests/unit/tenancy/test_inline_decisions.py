"""`facts().inline` keeps its promise: for every endpoint it admits, `on_request` finishes
without awaiting anything (the gateway's fast lane runs it from a read callback)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import classify
from dockmoat.gateway.stages import Context, Stage
from dockmoat.policy.decision import Allow, Deny, Rewrite
from dockmoat.tenancy.model import Tenant
from dockmoat.tenancy.stage import TenancyStage
from dockmoat.tenancy.store import OwnershipStore


class _NoUpstream:
    async def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an inline decision looked something up")


def _target(template: str) -> str:
    return "/v1.41" + re.sub(r"\{[^}]+\}", "x1", template)


def _request(method: str, template: str, client: ClientIdentity) -> ApiRequest:
    target = _target(template) + "?all=1&filters=%7B%22name%22%3A%5B%22web%22%5D%7D"
    path, version, route = classify(method, target)
    return ApiRequest(method, target, path, version, route, {"all": ["1"]}, (), client)


def _run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("on_request suspended")


def test_every_inline_route_decides_without_awaiting(tmp_path: Path) -> None:
    tenant = Tenant.job("job-7")
    stage = TenancyStage(OwnershipStore(tmp_path / "state.db"), lambda client: tenant)
    client = ClientIdentity(listener="unix:///x", tenant="job-7")
    inline = []
    for method, template, _resource, _action in ENDPOINTS:
        request = _request(method, template, client)
        if not stage.facts(request).inline:
            continue
        inline.append(request.route.name)
        decision = _run(stage.on_request(Context(client, _NoUpstream()), request))
        assert isinstance(decision, Allow | Rewrite | Deny), request.route.name
    # The lists and pings a CI job sends most are among them; look-ups are not.
    assert {"containers.list", "images.list", "system.ping"} <= set(inline)
    assert "containers.inspect" not in inline and "containers.start" not in inline


def test_without_tenancy_or_for_a_closed_job_everything_is_inline(tmp_path: Path) -> None:
    closed = Deny("tenancy.unknown-tenant", "closed")
    for who in (None, closed):
        stage = TenancyStage(OwnershipStore(tmp_path / "s.db"), lambda client, w=who: w)
        request = _request("GET", "/containers/{name}/json", ClientIdentity(listener="u"))
        assert stage.facts(request).inline
        ctx = Context(request.client, _NoUpstream())
        assert _run(stage.on_request(ctx, request)) == (closed if who else Allow())


def test_the_base_stage_does_nothing_and_decides_inline() -> None:
    """A stage that overrides nothing: Allow without awaiting, nothing remembered."""
    request = _request("GET", "/_ping", ClientIdentity(listener="u"))
    stage = Stage()
    assert stage.facts(request).inline and stage.facts(request).answer == "none"
    assert _run(stage.on_request(Context(request.client, _NoUpstream()), request)) == Allow()
    assert stage.decisions_key(request.client) is None

    class LooksUp(Stage):
        async def on_request(self, ctx: Context, request: ApiRequest) -> Allow:
            return Allow()

    # A stage with its own on_request that does not say what it decides inline: nothing.
    assert not LooksUp().facts(request).inline


def test_decisions_key_follows_the_clients_tenant(tmp_path: Path) -> None:
    """What the gateway compares before reusing a decision: equal while the tenant is the
    same (even a fresh but equal Tenant value), different once its job closed."""
    current: list[object] = [Tenant.job("job-7")]
    stage = TenancyStage(OwnershipStore(tmp_path / "s.db"), lambda client: current[0])
    client = ClientIdentity(listener="unix:///x", tenant="job-7")
    before = stage.decisions_key(client)
    current[0] = Tenant.job("job-7")  # rebuilt, equal
    assert stage.decisions_key(client) == before
    current[0] = Deny("tenancy.unknown-tenant", "closed")
    assert stage.decisions_key(client) != before
    current[0] = None  # no tenancy: still a state (decisions may be reused)
    assert stage.decisions_key(client) is not None
    assert Stage().decisions_key(client) is None  # a stage that does not say: never
