"""What plugs into the gateway: the policy, per-listener request stages, the upstream.

- `Policy`: the compiled policy (dockmoat.policy.engine.load_policy returns one).
- `Stage`: an optional per-listener stage (tenancy), run after routing and body
  decoding and BEFORE the policy. Every hook is typed and has a no-op default,
  so a stage overrides only what it does. Each hook gets the exchange's
  `Context` (who asks, the upstream client, what the stage keeps for this
  exchange between its hooks), as mitmproxy's hooks get a flow.
- `RouteFacts`: what the stage knows about a request before deciding it (reads
  the body, decides without I/O, how its answer comes back): one value per
  request, from the stage's route table.
- `UpstreamClient`: lets a stage make its own small request to the daemon over
  the gateway's pooled upstream connections.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.policy.decision import Allow, Decision, Deny

ResponseKind = Literal["json", "events", "load", "build", "none"]
LineKind = Literal["events", "load", "build"]
#: A decoded JSON document (what `json.loads` returns): answers and stream lines.
Json: TypeAlias = Any


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


@dataclass(slots=True)
class Context:
    """One exchange as a stage sees it: who asks, how to look things up, and what
    the stage keeps between this exchange's hooks (`metadata`: e.g. tenancy's image
    list taken before a `docker load`, read again by the load's progress lines)."""

    client: ClientIdentity
    upstream: UpstreamClient
    metadata: dict[str, object] = field(default_factory=dict)


class RouteFacts(NamedTuple):
    """What a stage knows about a request before deciding it (one per request, hence
    a NamedTuple).

    `body`: it reads the JSON body (the gateway buffers and decodes it). `inline`: its
    `on_request` decides without awaiting anything (the gateway may then decide from
    a read callback). `answer`: how a 2xx answer comes back through it. `errors`: its
    4xx/5xx JSON answers come back through `on_json_response`.
    """

    body: bool = False
    inline: bool = True
    answer: ResponseKind = "none"
    errors: bool = False


#: A request the stage has nothing to do with.
UNTOUCHED = RouteFacts()


#: What a stage with its own `on_request` and no `facts` is taken to do: anything.
_MAY_LOOK_UP = RouteFacts(inline=False)


class Stage:
    """A per-listener request stage. Subclass and override what the stage does.

    A stage that overrides `on_request` says in `facts` which requests it decides
    without awaiting (`inline`); without `facts`, none (its look-ups are unknown here).
    One that keeps the no-op `on_request` decides every request inline.
    """

    _own_on_request = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._own_on_request = cls.on_request is not Stage.on_request

    def applies_to(self, client: ClientIdentity) -> bool:
        """False when the stage does nothing for any request of this client's
        connection, for as long as it lasts (a listener without tenancy)."""
        return True

    def decisions_key(self, client: ClientIdentity) -> Hashable | None:
        """What the stage's inline decisions for this client depend on besides the
        request. `facts` and an inline `on_request` must be functions of the request
        and of this value: while it compares equal, the gateway may reuse a decision
        made for the same request bytes on the same connection. None: never reuse."""
        return None

    def facts(self, request: ApiRequest) -> RouteFacts:
        return _MAY_LOOK_UP if self._own_on_request else UNTOUCHED

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        """Allow, Rewrite (path, query, body) or Deny, before the policy."""
        return Allow()

    def on_json_response(
        self, ctx: Context, request: ApiRequest, status: int, answer: Json
    ) -> Json:
        """A whole JSON answer (`facts().answer == "json"`, or an error when
        `facts().errors`) as the client reads it."""
        return answer

    def on_line(self, ctx: Context, request: ApiRequest, kind: LineKind, line: Json) -> Json:
        """One line of a streamed JSON answer (`facts().answer` is `kind`); None drops it."""
        return line

    # --- references read from streamed bodies (api/bodies.py) ---

    async def check_build_sources(
        self, ctx: Context, request: ApiRequest, refs: Sequence[str]
    ) -> Decision:
        """The images a classic build's Dockerfile resolves (FROM, COPY --from)."""
        return Allow()

    async def check_archive_tags(
        self, ctx: Context, request: ApiRequest, archive: ArchiveTags
    ) -> Decision:
        """The tags a `docker load` tarball sets."""
        return Allow()

    # --- BuildKit calls (dockmoat.buildkit.decide) ---

    def build_owner(self, client: ClientIdentity) -> str | Deny | None:
        """The owner whose builds this client's BuildKit calls are (None: nobody's)."""
        return None

    async def claim_build_tag(self, client: ClientIdentity, tag: str) -> Decision:
        """An image name a BuildKit export sets."""
        return Allow()

    async def release_build_tags(self, client: ClientIdentity, tags: list[str]) -> None:
        """A BuildKit build failed: what it claimed goes."""

    async def foreign_images(self, client: ClientIdentity) -> tuple[frozenset[str], frozenset[str]]:
        """(tags, image ids) this client's builds must not resolve."""
        return frozenset(), frozenset()

    async def build_ended(self, client: ClientIdentity, built: list[str]) -> None:
        """A Solve of this client's ended (it may have made an image); `built`: the
        tags it exported (none if it failed)."""


class PermissivePolicy:
    """Forwards every request (the `permissive` profile while no policy engine is installed)."""

    def body_needed(self, route: Route) -> bool:
        return False

    def evaluate(self, request: ApiRequest) -> Decision:
        return Allow(rule="permissive")
