"""Build requests the way the gateway does (real routing, real decoder) and decide them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockmoat.api import gojson
from dockmoat.api.query import parse_query
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import classify, split_target
from dockmoat.policy.decision import Decision
from dockmoat.policy.engine import CompiledPolicy, load_policy

Decide = Callable[..., Decision]


def make_request(method: str, target: str, body: Any = None) -> ApiRequest:
    path, version, route = classify(method, target)
    _path, raw_query = split_target(target)
    raw = body if isinstance(body, bytes) else None
    if body is not None and raw is None:
        raw = json.dumps(body).encode()
    return ApiRequest(
        method=method,
        raw_target=target,
        path=path,
        api_version=version,
        route=route,
        query=parse_query(raw_query) if raw_query else {},
        headers=(),
        client=ClientIdentity(listener="test"),
        body_json=gojson.loads(raw) if raw else None,
        body_raw=raw,
    )


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
