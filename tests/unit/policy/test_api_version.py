"""`system.api-version`: versions below 1.24 are refused on every route, others pass."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import CompiledPolicy, load_policy
from dockmoat.policy.rules.system import EVERY_ROUTE

START_BODY = {"Privileged": True, "Binds": ["/:/host"]}


@pytest.mark.parametrize("version", ["1.23", "1.12", "1.9", "01.023", "1.4.1", "0.99"])
def test_old_versions_are_refused_even_without_a_body(
    version: str, baseline: CompiledPolicy, make_request: Callable[..., ApiRequest]
) -> None:
    for method, path, body in (
        ("POST", "/containers/abc/start", START_BODY),
        ("GET", "/containers/json", None),
        ("POST", "/containers/abc/copy", {"Resource": "/etc"}),
    ):
        decision = baseline.evaluate(make_request(method, f"/v{version}{path}", body))
        assert isinstance(decision, Deny)
        assert decision.rule == "system.api-version"
        assert "1.24 or newer" in decision.message


@pytest.mark.parametrize("target", ["/containers/json", "/v1.24/containers/json",
                                    "/v1.24./containers/json", "/v01.041/containers/json",
                                    "/v1.56/containers/json"])  # fmt: skip
def test_current_versions_pass(
    target: str, baseline: CompiledPolicy, make_request: Callable[..., ApiRequest]
) -> None:
    assert not isinstance(baseline.evaluate(make_request("GET", target)), Deny)


def test_permissive_forwards_old_versions(make_request: Callable[..., ApiRequest]) -> None:
    permissive = load_policy("permissive", env={})
    decision = permissive.evaluate(make_request("GET", "/v1.12/containers/json"))
    assert not isinstance(decision, Deny)


def test_the_rule_covers_every_resource() -> None:
    for resource in ("containers", "exec", "images", "build", "volumes", "networks", "system",
                     "plugins", "swarm", "session", "grpc", "distribution", "unknown"):  # fmt: skip
        assert f"{resource}.*" in EVERY_ROUTE
