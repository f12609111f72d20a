"""The tenancy stage of the gateway: per request, find out what it refers to, then decide.

What tenancy does for each Engine API route is one entry of the route table
(routes/table.py; one module per resource under routes/). This stage is the
dispatcher: it works out who the client is, looks the route's entry up and
calls it, and answers by itself what does not depend on the route (no tenancy,
a closed job, a reference tenancy does not resolve). Look-ups go through
`Lookups` (the engine, the ownership store); the decisions themselves are the
pure functions of rules.py and present.py. Any failure to find out is a
denial: the gateway turns an exception here into a Deny (fail closed), and
unknown tenants are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.policy.decision import Allow, Decision, Deny
from dockmoat.tenancy import present
from dockmoat.tenancy import refs as references
from dockmoat.tenancy.engine import EngineApi, PooledEngine, Upstream
from dockmoat.tenancy.lookups import Lookups, resolved_path
from dockmoat.tenancy.model import ImageFacts, Tenant, normalize_tag
from dockmoat.tenancy.routes import build, images
from dockmoat.tenancy.routes.base import LineHandler, ResponseKind
from dockmoat.tenancy.routes.table import entry
from dockmoat.tenancy.store import OwnershipStore

__all__ = ["ResponseKind", "TenancyStage", "daemon_sockets"]


def daemon_sockets(upstream: Path | None) -> frozenset[str]:
    """The daemon's socket in every spelling a bind source resolves to."""
    paths = ["/var/run/docker.sock", "/run/docker.sock"]
    if upstream is not None:
        paths.append(str(upstream))
    return frozenset(resolved_path(path) for path in paths) - {""}


class TenancyStage:
    """Decides every request of a tenant's listener.

    `tenant_of` says who a client is: its Tenant, a Deny (a closed job, an
    unusable certificate CN) or None for a listener without tenancy.
    """

    def __init__(
        self,
        store: OwnershipStore,
        tenant_of: Callable[[ClientIdentity], Tenant | Deny | None],
        engine: EngineApi | None = None,
        *,
        untenanted: Callable[[ClientIdentity], bool] | None = None,
        socket_of: Callable[[str], str | None] | None = None,
        daemon_sockets: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.tenant_of = tenant_of
        self._untenanted = untenanted
        self.look = Lookups(store, engine, socket_of=socket_of, daemon_sockets=daemon_sockets)

    @property
    def engine(self) -> EngineApi:
        return self.look.engine

    def image_facts(self, tenant: Tenant) -> ImageFacts:
        return self.look.image_facts(tenant)

    # --- requests -----------------------------------------------------------------

    async def on_request(self, request: ApiRequest, upstream: Upstream) -> Decision:
        if self.look.engine_or_none is None:
            # Inside the gateway, look-ups use its pooled upstream (known at the first request).
            self.look.engine_or_none = PooledEngine(upstream)
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        # Before any handler: a reference no handler resolves is refused (refs.py), so
        # a route without an entry, or a field an entry does not read, fails closed.
        item = references.unresolved(request)
        if item is not None:
            return references.refusal(request, item)
        handler = entry(request.route.name).handler
        if handler is None:
            return Allow()
        return await handler(self.look, request, tenant)

    def body_needed(self, route: Route) -> bool:
        """Whether the stage reads the JSON body of this route (buffered by the gateway)."""
        return entry(route.name).body

    def decides_inline(self, request: ApiRequest) -> bool:
        """Whether `on_request` decides this request without looking anything up.

        The gateway's fast lane runs such decisions from a read callback; requests
        whose route's handler resolves names or reads ownership go the ordinary way.
        """
        tenant = self.tenant_of(request.client)
        if not isinstance(tenant, Tenant):
            return True  # no tenancy (Allow) or a closed job (Deny): nothing to look up
        inline = entry(request.route.name).inline
        return inline if isinstance(inline, bool) else inline(request)

    def exempt(self, client: ClientIdentity) -> bool:
        """Whether this stage does nothing for any request of this client's connection:
        `tenant_of` is None for it for good (see `stages.exempts`)."""
        return self._untenanted is not None and self._untenanted(client)

    def inline_state(self, client: ClientIdentity) -> object:
        """All that `decides_inline`, `response_kind`, `rewrites_errors` and the inline
        handlers read besides the request: the client's tenant (a Deny once its job
        closed, None without tenancy). Tenants are frozen values, compared by value.
        """
        return ("tenant", self.tenant_of(client))

    # --- references read from streamed bodies (api/bodies.py) ------------------

    async def check_build_sources(self, request: ApiRequest, refs: Sequence[str]) -> Decision:
        """A classic build's FROM and COPY --from images (routes/build.py)."""
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        return await build.check_sources(self.look, tenant, refs)

    async def check_archive_tags(self, request: ApiRequest, archive: ArchiveTags) -> Decision:
        """The tags a job's `docker load` sets (routes/images.py)."""
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        return await images.check_archive(self.look, tenant, archive)

    # --- BuildKit calls (dockmoat.buildkit.decide) -------------------------------

    def build_owner(self, client: ClientIdentity) -> str | Deny | None:
        """The tenant whose builds this client's BuildKit calls are (None: no tenancy)."""
        tenant = self.tenant_of(client)
        if tenant is None or isinstance(tenant, Deny):
            return tenant
        return tenant.name

    async def claim_build_tag(self, client: ClientIdentity, tag: str) -> Decision:
        """An image name a BuildKit export sets: free or the tenant's, as `build -t`."""
        tenant = self.tenant_of(client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        return await self.look.claim_tag(tenant, tag)

    async def release_build_tags(self, client: ClientIdentity, tags: list[str]) -> None:
        """A BuildKit build failed: the tags it claimed go where no image carries them."""
        tenant = self.tenant_of(client)
        if tenant is not None and not isinstance(tenant, Deny):
            await self.look.release_unbuilt(tenant, [normalize_tag(tag) for tag in tags])

    async def foreign_images(self, client: ClientIdentity) -> tuple[frozenset[str], frozenset[str]]:
        """(tags, image ids) this client's builds must not resolve (routes/build.py)."""
        tenant = self.tenant_of(client)
        if tenant is None or isinstance(tenant, Deny):
            return frozenset(), frozenset()
        return await build.foreign_images(self.look, tenant)

    # --- answers ------------------------------------------------------------------

    def _isolated(self, request: ApiRequest) -> bool:
        """Whether the client is under tenancy at all (even a job that closed meanwhile:
        its answers are then still filtered, its events dropped, never relayed raw)."""
        return self.tenant_of(request.client) is not None

    def _tenant(self, request: ApiRequest) -> Tenant | None:
        """The client's tenant once its request was let through (None: no tenancy)."""
        tenant = self.tenant_of(request.client)
        return tenant if isinstance(tenant, Tenant) else None

    def response_kind(self, request: ApiRequest) -> ResponseKind:
        if not self._isolated(request):
            return "none"
        kind = entry(request.route.name).answer
        return kind if isinstance(kind, str) else kind(request)

    def rewrites_errors(self, request: ApiRequest) -> bool:
        """Error answers on a tenant's listener come back through `on_json_response`."""
        return self._isolated(request) and entry(request.route.name).rewrites_errors

    def on_json_response(self, request: ApiRequest, status: int, answer: Any) -> Any:
        """The buffered JSON answer as the tenant reads it (and what it records)."""
        tenant = self._tenant(request)
        if tenant is None:
            return answer
        route = entry(request.route.name)
        if status >= 400:
            if route.on_error is not None:
                route.on_error(self.look, request, tenant)
            return present.present_error(answer, tenant)
        if not 200 <= status < 300 or route.on_answer is None:
            return answer
        return route.on_answer(self.look, request, tenant, answer)

    def on_event(self, request: ApiRequest, event: Any) -> Any:
        """One event of the stream as the tenant sees it, or None to drop it."""
        tenant = self._tenant(request)
        if tenant is None or not isinstance(event, dict):
            return None
        line = self._line_handler(request, "events")
        # A route without an event stream of its own: dropped, never relayed raw.
        return None if line is None else line(self.look, request, tenant, event)

    def on_load_message(self, request: ApiRequest, message: Any) -> Any:
        """`docker load` progress, through the route's line handler (routes/images.py)."""
        return self._through_line(request, message, "load")

    def on_build_message(self, request: ApiRequest, message: Any) -> Any:
        """A classic build's (or an import's) progress, through the route's line handler
        (routes/build.py, routes/images.py)."""
        return self._through_line(request, message, "build")

    def _through_line(self, request: ApiRequest, message: Any, kind: ResponseKind) -> Any:
        tenant = self._tenant(request)
        if tenant is None or not isinstance(message, dict):
            return message
        line = self._line_handler(request, kind)
        return message if line is None else line(self.look, request, tenant, message)

    def _line_handler(self, request: ApiRequest, kind: ResponseKind) -> LineHandler | None:
        """The route's line handler, for the stream kind its entry answers with only (a
        line handler reads its own route's lines: an event is not a load's progress)."""
        route = entry(request.route.name)
        answer = route.answer
        if (answer if isinstance(answer, str) else answer(request)) != kind:
            return None
        return route.on_line
