"""The tenancy route table: every route of the endpoint table exactly once, each entry
consistent with itself (tenancy/routes/)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from dockmoat.api.endpoints import ENDPOINTS
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow
from dockmoat.tenancy.model import Tenant
from dockmoat.tenancy.routes import table
from dockmoat.tenancy.routes.base import DEFAULT, Entry
from dockmoat.tenancy.stage import TenancyStage
from dockmoat.tenancy.store import OwnershipStore

ROUTES = frozenset(f"{resource}.{action}" for _m, _p, resource, action in ENDPOINTS)


def test_every_route_has_one_place_in_the_table() -> None:
    assert set(table.TABLE) == ROUTES
    named = Counter(
        route
        for module in table.MODULES
        for route in (*(e.route for e in module.ENTRIES), *module.UNTOUCHED)
    )
    assert [route for route, count in named.items() if count > 1] == []
    assert set(named) == ROUTES


def test_each_module_holds_its_own_resources() -> None:
    # A route's entry lives in its resource's module (builds, sessions and BuildKit's
    # gRPC with `build`; swarm, plugins and distribution with `system`).
    home = {"session": "build", "grpc": "build"}
    home |= dict.fromkeys(
        ("swarm", "services", "nodes", "tasks", "secrets", "configs", "plugins", "distribution"),
        "system",
    )
    for module in table.MODULES:
        name = module.__name__.rsplit(".", 1)[1]
        for route in (*(e.route for e in module.ENTRIES), *module.UNTOUCHED):
            resource = route.split(".", 1)[0]
            assert home.get(resource, resource) == name, (route, name)


@pytest.mark.parametrize("entry", [e for e in table.TABLE.values() if e is not DEFAULT],
                         ids=lambda e: e.route)  # fmt: skip
def test_an_entry_says_only_what_it_does(entry: Entry) -> None:
    if entry.handler is None:
        # Nothing to look up: decided inline, and no body read.
        assert entry.inline is True and not entry.body
    if entry.on_answer is not None:
        assert entry.answer == "json" or callable(entry.answer)
    if entry.answer in ("events", "load") or callable(entry.answer):
        assert entry.on_line is not None  # a stream is read line by line
    if entry.on_line is not None:
        assert entry.answer in ("events", "load", "build") or callable(entry.answer)


def test_a_route_the_table_lacks_gets_the_default() -> None:
    assert table.entry("unknown.unknown") is DEFAULT
    assert DEFAULT.handler is None and DEFAULT.inline is True and DEFAULT.answer == "none"


def test_a_route_without_an_entry_is_decided_by_the_reference_check(tmp_path: Path) -> None:
    """Nothing of tenancy's own runs for it; a request naming an object tenancy does not
    resolve is refused (refs.py), one naming none goes through."""
    stage = TenancyStage(OwnershipStore(tmp_path / "s.db"), lambda client: Tenant.job("job-7"))
    client = ClientIdentity(listener="unix:///x", tenant="job-7")

    def decide(route: Route, path: str) -> object:
        request = ApiRequest("GET", path, path, None, route, {}, (), client)
        assert stage.facts(request).inline and stage.facts(request).answer == "none"
        return asyncio.run(stage.on_request(Context(client, None), request))  # type: ignore[arg-type]

    assert decide(Route("system", "info"), "/info") == Allow()
    refused = decide(Route("images", "attestations", {"name": "x"}), "/images/x/attestations")
    assert refused != Allow()
