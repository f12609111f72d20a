"""Build requests the way the gateway does (real routing, real decoder) and decide them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Decision
from dockmoat.policy.engine import CompiledPolicy, load_policy
from dockmoat.policy.trial import routed, with_json_body

Decide = Callable[..., Decision]


def make_request(method: str, target: str, body: Any = None) -> ApiRequest:
    """`body`: raw bytes, or a value sent as JSON; None for no body."""
    if body is None:
        raw = b""
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = json.dumps(body).encode()
    return with_json_body(routed(method, target, listener="test"), raw)


@pytest.fixture(name="make_request")
def make_request_fixture() -> Callable[..., ApiRequest]:
    return make_request


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def baseline(workspace: Path) -> CompiledPolicy:
    return load_policy("baseline", allow_bind=[workspace], env={})


@pytest.fixture
def restricted(workspace: Path) -> CompiledPolicy:
    return load_policy("restricted", allow_bind=[workspace], env={})


@pytest.fixture
def decide(baseline: CompiledPolicy) -> Decide:
    """decide(method, target, body=None, policy=baseline) -> Decision."""

    def run(
        method: str, target: str, body: Any = None, policy: CompiledPolicy | None = None
    ) -> Decision:
        return (policy or baseline).evaluate(make_request(method, target, body))

    return run
