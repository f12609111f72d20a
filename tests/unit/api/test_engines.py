"""What the guard learns of its upstream engine, and the decisions that follow it."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.engines import (
    EngineVersion,
    from_version_answer,
    parse_api_version,
    start_message,
    too_old,
)
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import route_path
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.http import RequestHead, RequestReader
from dockmoat.gateway.stages import Context, PermissivePolicy
from dockmoat.policy.decision import Deny
from support.upstream import NoUpstream

ENGINE_28 = EngineVersion("28.5.2", (1, 51), (1, 24))
ENGINE_20 = EngineVersion("20.10.24", (1, 41), (1, 12))


def test_version_answers_of_real_engines() -> None:
    answer = {"Version": "28.5.2+dfsg4", "ApiVersion": "1.51", "MinAPIVersion": "1.24"}
    assert from_version_answer(json.dumps(answer).encode()) == EngineVersion(
        "28.5.2+dfsg4", (1, 51), (1, 24)
    )
    old = {"Version": "1.11.0", "ApiVersion": "1.23"}  # before MinAPIVersion existed
    assert from_version_answer(json.dumps(old).encode()).min_api == (1, 12)
    with pytest.raises(ValueError):
        from_version_answer(b'{"Version": "x"}')
    with pytest.raises(ValueError):
        from_version_answer(b"[]")


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_api_versions_parse_back(major: int, minor: int) -> None:
    assert parse_api_version(f"{major}.{minor}") == (major, minor)
    assert parse_api_version(f"{major}.{minor}.") == (major, minor)


@given(st.text(max_size=12))
def test_api_version_parser_never_raises(text: str) -> None:
    parsed = parse_api_version(text)
    assert parsed is None or all(part >= 0 for part in parsed)


def test_an_engine_newer_than_the_table_is_named() -> None:
    warn, line = start_message(EngineVersion("31.0.0", (1, 60), (1, 24)))
    assert warn and "31.0.0" in line and "1.60" in line and "1.56" in line
    warn, line = start_message(ENGINE_28)
    assert not warn and "28.5.2" in line and "1.51" in line


def test_legacy_host_config_per_engine() -> None:
    assert ENGINE_20.reads_legacy_host_config
    assert not ENGINE_28.reads_legacy_host_config


def test_the_minimum_api_version_follows_the_engine() -> None:
    newer_min = EngineVersion("40.0", (1, 60), (1, 44))
    assert too_old("1.43", newer_min) == (1, 44)
    assert too_old("1.44", newer_min) is None
    assert too_old(None, newer_min) is None  # no prefix: the engine's own version
    assert too_old("1.23", ENGINE_28) is None  # below 1.24 is system.api-version's
    assert too_old("1.30", None) is None
    assert newer_min.oldest_forwarded == (1, 44)
    assert ENGINE_20.oldest_forwarded == (1, 24)


def decided(request: ApiRequest, engine: EngineVersion) -> pipeline.Outcome:
    ctx = Context(request.client, NoUpstream())
    coro = pipeline.decide(request, PermissivePolicy(), None, ctx, form=False, engine=engine)
    return asyncio.run(coro)


def test_the_pipeline_refuses_below_the_engines_minimum() -> None:
    (head, *_rest) = RequestReader().feed(b"GET /v1.43/containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
    client = ClientIdentity(listener="unix:///t.sock")
    assert isinstance(head, RequestHead)
    request = pipeline.plan(head, client, PermissivePolicy()).request
    engine = EngineVersion("40.0", (1, 60), (1, 44))
    outcome = decided(request, engine)
    assert isinstance(outcome.decision, Deny)
    assert outcome.decision.status == 400
    assert "1.44" in outcome.decision.message
    assert not isinstance(decided(request, ENGINE_28).decision, Deny)
    assert route_path("GET", "/v1.43/containers/json")[2].name == "containers.list"
