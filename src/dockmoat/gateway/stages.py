"""What plugs into the gateway: the policy, per-listener request stages, the upstream.

- `Policy`: the compiled policy (dockmoat.policy.engine.load_policy returns one).
- `RequestStage`: an optional per-listener stage (tenancy) run after routing
  and body decoding and BEFORE the policy; it may Allow, Rewrite (path, query,
  body) or Deny (404/403), and may rewrite answers: a buffered JSON answer
  (`response_kind` "json") or a line-delimited JSON stream ("events", "load",
  "build"), line by line.
- `UpstreamClient`: lets a stage make its own small request to the daemon over
  the gateway's pooled upstream connections.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.policy.decision import Allow, Decision

ResponseKind = Literal["json", "events", "load", "build", "none"]


class Policy(Protocol):
    def body_needed(self, route: Route) -> bool: ...

    def evaluate(self, request: ApiRequest) -> Decision: ...


class UpstreamClient(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One small request to the daemon: (status, headers, whole body); bounded."""
        ...


@runtime_checkable
class RequestStage(Protocol):
    async def on_request(self, request: ApiRequest, upstream: UpstreamClient) -> Decision: ...

    def response_kind(self, request: ApiRequest) -> ResponseKind: ...

    def on_json_response(self, request: ApiRequest, status: int, answer: Any) -> Any: ...

    def on_event(self, request: ApiRequest, event: Any) -> Any: ...


@runtime_checkable
class BodyChecks(Protocol):
    """What a stage decides about references read from a streamed body (api/bodies.py)."""

    async def check_build_sources(self, request: ApiRequest, refs: Sequence[str]) -> Decision:
        """The images a classic build's Dockerfile resolves (FROM, COPY --from)."""
        ...

    async def check_archive_tags(self, request: ApiRequest, archive: ArchiveTags) -> Decision:
        """The tags a `docker load` tarball sets."""
        ...


class PermissivePolicy:
    """Forwards every request (the `permissive` profile while no policy engine is installed)."""

    def body_needed(self, route: Route) -> bool:
        return False

    def evaluate(self, request: ApiRequest) -> Decision:
        return Allow(rule="permissive")


OnRequest = Callable[[ApiRequest, UpstreamClient], Awaitable[Decision]]


def bind_on_request(stage: Any) -> OnRequest:
    """Call `stage.on_request` with the upstream client when it takes one.

    A stage that does its own look-ups may declare `on_request(request)` only.
    """
    method = stage.on_request
    params = list(inspect.signature(method).parameters.values())
    if len(params) >= 2:
        return method  # type: ignore[no-any-return]

    async def call(request: ApiRequest, upstream: UpstreamClient) -> Decision:
        result: Decision = await method(request)
        return result

    return call


def response_kind(stage: Any, request: ApiRequest) -> ResponseKind:
    kind = getattr(stage, "response_kind", None)
    if kind is None:
        return "none"
    result: ResponseKind = kind(request)
    return result


def decides_inline(stage: Any, request: ApiRequest) -> bool:
    """Whether the stage's `on_request` decides this request without I/O (never awaits).

    A stage says so with `decides_inline(request)`; without it, never.
    """
    check = getattr(stage, "decides_inline", None)
    return bool(check(request)) if check is not None else False


def exempts(stage: Any, client: ClientIdentity) -> bool:
    """Whether the stage passes every request of this client's connection through
    untouched, for as long as it lasts (a listener without tenancy): the fast lane
    then skips it for that connection. A stage says so with `exempt(client)`;
    without it, never.
    """
    check = getattr(stage, "exempt", None)
    return bool(check(client)) if check is not None else False


def inline_state(stage: Any, client: ClientIdentity) -> object:
    """What the stage's inline decisions for this client depend on besides the request.

    `decides_inline`, `response_kind`, `rewrites_errors` and the inline `on_request`
    must be functions of the request and of this value: while it compares equal,
    the gateway may reuse a decision it made for the same request bytes on the same
    connection (states are compared with ==). None (or a stage without `inline_state`): never reuse.
    """
    state = getattr(stage, "inline_state", None)
    return state(client) if state is not None else None


def error_kind(stage: Any, request: ApiRequest) -> bool:
    """Whether the stage rewrites this request's error answers (`on_json_response`, 4xx/5xx)."""
    wants = getattr(stage, "rewrites_errors", None)
    return bool(wants(request)) if wants is not None else False


def line_handler(stage: Any, kind: ResponseKind) -> Callable[[ApiRequest, Any], Any] | None:
    """The per-line callback of a streamed JSON answer (events, load progress)."""
    if kind == "events":
        return getattr(stage, "on_event", None)
    if kind == "load":
        return getattr(stage, "on_load_message", None)
    if kind == "build":
        return getattr(stage, "on_build_message", None)
    return None
