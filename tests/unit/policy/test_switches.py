"""Tecnativa-style endpoint switches: that proxy's meanings and defaults, two leaks closed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.errors import ConfigError
from dockmoat.policy.decision import Allow, Deny
from dockmoat.policy.engine import load_policy

MakeRequest = Callable[..., ApiRequest]


def decide(
    env: dict[str, str], method: str, target: str, make_request: MakeRequest, body: Any = None
) -> Any:
    return load_policy(env=env).evaluate(make_request(method, target, body))


@pytest.mark.parametrize(
    ("env", "method", "target", "allowed"),
    [
        # defaults once any switch is set: only EVENTS, PING, VERSION
        ({"CONTAINERS": "1"}, "GET", "/_ping", True),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/version", True),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/events", True),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/info", False),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/images/json", False),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/containers/json", True),
        ({"PING": "0"}, "GET", "/_ping", False),
        # POST=0: read-only
        ({"CONTAINERS": "1"}, "POST", "/v1.41/containers/x/start", False),
        ({"CONTAINERS": "1"}, "DELETE", "/v1.41/containers/x", False),
        ({"CONTAINERS": "1", "POST": "1"}, "POST", "/v1.41/containers/x/start", True),
        ({"CONTAINERS": "1", "POST": "1"}, "DELETE", "/v1.41/containers/x", True),
        # ALLOW_* open their actions without CONTAINERS, but still need POST
        ({"ALLOW_START": "1"}, "POST", "/v1.41/containers/x/start", False),
        ({"ALLOW_START": "1", "POST": "1"}, "POST", "/v1.41/containers/x/start", True),
        ({"ALLOW_START": "1", "POST": "1"}, "POST", "/v1.41/containers/x/stop", False),
        ({"ALLOW_STOP": "1", "POST": "1"}, "POST", "/v1.41/containers/x/stop", True),
        ({"ALLOW_RESTARTS": "1", "POST": "1"}, "POST", "/v1.41/containers/x/kill", True),
        ({"ALLOW_RESTARTS": "1", "POST": "1"}, "POST", "/v1.41/containers/x/restart", True),
        # unlike the original: EXEC=0 closes exec create under /containers
        ({"CONTAINERS": "1", "POST": "1"}, "POST", "/v1.41/containers/x/exec", False),
        ({"CONTAINERS": "1", "POST": "1", "EXEC": "1"}, "POST", "/v1.41/containers/x/exec", True),
        # unlike the original: read-only mode closes archive, export and attach
        ({"CONTAINERS": "1"}, "GET", "/v1.41/containers/x/archive?path=/", False),
        ({"CONTAINERS": "1"}, "HEAD", "/v1.41/containers/x/archive?path=/", False),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/containers/x/export", False),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/containers/x/attach/ws", False),
        ({"CONTAINERS": "1"}, "GET", "/v1.41/containers/x/logs", True),
        ({"CONTAINERS": "1", "POST": "1"}, "GET", "/v1.41/containers/x/export", True),
        # switches replace the profile's endpoint rules, not the body rules
        ({"PLUGINS": "1", "POST": "1"}, "POST", "/v1.41/plugins/pull?remote=x", True),
        ({"SESSION": "1", "POST": "1"}, "POST", "/session", True),
        ({"BUILD": "true", "POST": "yes"}, "POST", "/build?t=x", True),
        ({"IMAGES": "1", "POST": "1"}, "POST", "/v1.41/containers/create", False),
    ],
)
def test_switch_table(
    env: dict[str, str], method: str, target: str, allowed: bool, make_request: MakeRequest
) -> None:
    body = {} if target.endswith(("create", "exec")) else None
    decision = decide(env, method, target, make_request, body)
    assert isinstance(decision, Allow) is allowed, decision
    if not allowed:
        assert isinstance(decision, Deny)
        assert decision.rule == "endpoints.switches"
        assert decision.message.startswith("dockmoat: endpoints.switches: ")


def test_body_rules_still_apply_under_switches(make_request: MakeRequest) -> None:
    env = {"CONTAINERS": "1", "POST": "1"}
    body = {"Image": "b", "HostConfig": {"Privileged": True}}
    decision = decide(env, "POST", "/v1.41/containers/create", make_request, body)
    assert isinstance(decision, Deny) and decision.rule == "containers.privileged"


def test_no_switch_set_means_the_profile_decides(make_request: MakeRequest) -> None:
    assert isinstance(decide({"LOG_LEVEL": "info"}, "GET", "/v1.41/info", make_request), Allow)
    assert isinstance(decide({}, "POST", "/v1.41/plugins/pull", make_request), Deny)


def test_values_that_are_not_switch_values_are_ignored(make_request: MakeRequest) -> None:
    # VERSION=1.2.3 is common in CI environments; it must neither stop start-up
    # nor turn switch mode on.
    policy = load_policy(env={"VERSION": "1.2.3"})
    assert policy.switches is None
    policy = load_policy(env={"CONTAINERS": "maybe", "POST": "1"})
    assert policy.switches is not None and not policy.switches.on("CONTAINERS")


def test_unclear_values_in_the_policy_file_fail_loudly() -> None:
    from dockmoat.policy.policyfile import parse_policy_text

    with pytest.raises(ConfigError, match="CONTAINERS"):
        parse_policy_text("endpoints: {CONTAINERS: maybe}\n", "p.yaml")
