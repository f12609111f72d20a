"""A JSON answer the stage rewrites: re-encoded only when the stage changed it."""

from __future__ import annotations

import json
from typing import Any

from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import classify
from dockmoat.gateway.sansio.exchange import restaged_json
from dockmoat.gateway.stages import Context, Stage


def _request() -> ApiRequest:
    path, version, route = classify("GET", "/v1.41/containers/json")
    return ApiRequest("GET", "/v1.41/containers/json", path, version, route, {}, (),
                      ClientIdentity(listener="unix:///x"))  # fmt: skip


class _NoUpstream:
    async def request(self, *args: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        raise AssertionError("no look-up")


CTX = Context(ClientIdentity(listener="unix:///x"), _NoUpstream())


class _Keep(Stage):
    def on_json_response(self, ctx: Context, request: ApiRequest, status: int, answer: Any) -> Any:
        return [dict(item) for item in answer]  # equal, not the same object


class _Drop(Stage):
    def on_json_response(self, ctx: Context, request: ApiRequest, status: int, answer: Any) -> Any:
        return [item for item in answer if item.get("mine")]


def _staged(stage: Stage) -> Any:
    return lambda answer: stage.on_json_response(CTX, _request(), 200, answer)


def test_an_equal_answer_is_the_daemons_own_bytes() -> None:
    body = b'[ {"mine": true,  "Id": "a"} ]\n'
    assert restaged_json(body, _staged(_Keep())) is None
    assert restaged_json(b"[]\n", _staged(_Keep())) is None


def test_a_changed_answer_is_re_encoded() -> None:
    body = b'[{"mine": true, "Id": "a"}, {"Id": "b"}]'
    out = restaged_json(body, _staged(_Drop()))
    assert out is not None and json.loads(out) == [{"mine": True, "Id": "a"}]
