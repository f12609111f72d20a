"""`networks.driver-options`: only harmless bridge options; no host bridge take-over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import CompiledPolicy


@pytest.mark.parametrize(
    "body",
    [
        {"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}},
        {"Name": "n", "options": {"com.docker.network.bridge.name": "eth0"}},
        {"Name": "n", "Options": {"com.docker.network.bridge.host_binding_ipv4": "0.0.0.0"}},
        {"Name": "n", "Options": {"Com.Docker.Network.Bridge.Name": "docker0"}},
        {"Name": "n", "IPAM": {"Driver": "some-plugin"}},
        {"Name": "n", "IPAM": {"Driver": "default", "Options": {"x": "y"}}},
    ],
)
def test_dangerous_options_are_refused(
    body: dict[str, Any], baseline: CompiledPolicy, make_request: Callable[..., ApiRequest]
) -> None:
    decision = baseline.evaluate(make_request("POST", "/v1.41/networks/create", body))
    assert isinstance(decision, Deny)
    assert decision.rule == "networks.driver-options"


@pytest.mark.parametrize(
    "body",
    [
        {"Name": "n"},
        {"Name": "n", "Options": {"com.docker.network.driver.mtu": "1400"}},
        {"Name": "n", "Options": {}, "IPAM": {"Driver": "default", "Options": {}, "Config": []}},
        {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24"}]}},
    ],
)
def test_ordinary_networks_pass(
    body: dict[str, Any], baseline: CompiledPolicy, make_request: Callable[..., ApiRequest]
) -> None:
    decision = baseline.evaluate(make_request("POST", "/v1.41/networks/create", body))
    assert not isinstance(decision, Deny)
