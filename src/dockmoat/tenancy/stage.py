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

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.gateway.stages import UNTOUCHED, Context, LineKind, RouteFacts, Stage
from dockmoat.policy.decision import Allow, Decision, Deny
from dockmoat.tenancy import present
from dockmoat.tenancy import refs as references
from dockmoat.tenancy.engine import EngineApi, PooledEngine
from dockmoat.tenancy.lookups import Lookups, resolved_path
from dockmoat.tenancy.model import ImageFacts, Tenant, normalize_tag
from dockmoat.tenancy.routes import build, images
from dockmoat.tenancy.routes.base import ResponseKind
from dockmoat.tenancy.routes.table import entry
from dockmoat.tenancy.store import OwnershipStore

__all__ = ["ResponseKind", "TenancyStage", "daemon_sockets"]


def daemon_sockets(upstream: Path | None) -> frozenset[str]:
    """The daemon's socket in every spelling a bind source resolves to."""
    paths = ["/var/run/docker.sock", "/run/docker.sock"]
    if upstream is not None:
        paths.append(str(upstream))
    return frozenset(resolved_path(path) for path in paths) - {""}


class TenancyStage(Stage):
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

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        if self.look.engine_or_none is None:
            # Inside the gateway, look-ups use its pooled upstream (known at the first request).
            self.look.engine_or_none = PooledEngine(ctx.upstream)
        tenant = self._open_tenant(request.client)
        if not isinstance(tenant, Tenant):
            return tenant
        # Before any handler: a reference no handler resolves is refused (refs.py), so
        # a route without an entry, or a field an entry does not read, fails closed.
        item = references.unresolved(request)
        if item is not None:
            return references.refusal(request, item)
        handler = entry(request.route.name).handler
        if handler is None:
            return Allow()
        return await handler(self.look, request, tenant, ctx)

    def _open_tenant(self, client: ClientIdentity) -> Tenant | Allow | Deny:
        """The client's tenant while its job is open; else what every request of it gets:
        Allow without tenancy, the Deny of a closed job or an unusable certificate."""
        tenant = self.tenant_of(client)
        if tenant is None:
            return Allow()
        return tenant

    def facts(self, request: ApiRequest) -> RouteFacts:
        """The route's entry, for this client: nothing without tenancy; a closed job's
        requests are denied without a look-up, its answers still filtered."""
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return UNTOUCHED
        route = entry(request.route.name)
        inline = route.inline
        answer = route.answer
        return RouteFacts(
            body=route.body,
            inline=not isinstance(tenant, Tenant)
            or (inline if isinstance(inline, bool) else inline(request)),
            answer=answer if isinstance(answer, str) else answer(request),
            errors=route.rewrites_errors,
        )

    def applies_to(self, client: ClientIdentity) -> bool:
        """False for a connection `tenant_of` says None to for good (a listener without
        tenancy): the gateway then skips the stage for it."""
        return self._untenanted is None or not self._untenanted(client)

    def decisions_key(self, client: ClientIdentity) -> Hashable:
        """All that `facts` and the inline handlers read besides the request: the
        client's tenant (a Deny once its job closed, None without tenancy). Tenants
        are frozen values, compared by value."""
        return ("tenant", self.tenant_of(client))

    # --- references read from streamed bodies (api/bodies.py) ------------------

    async def check_build_sources(
        self, ctx: Context, request: ApiRequest, refs: Sequence[str]
    ) -> Decision:
        """A classic build's FROM and COPY --from images (routes/build.py)."""
        tenant = self._open_tenant(request.client)
        if not isinstance(tenant, Tenant):
            return tenant
        return await build.check_sources(self.look, tenant, refs)

    async def check_archive_tags(
        self, ctx: Context, request: ApiRequest, archive: ArchiveTags
    ) -> Decision:
        """The tags a job's `docker load` sets (routes/images.py)."""
        tenant = self._open_tenant(request.client)
        if not isinstance(tenant, Tenant):
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
        tenant = self._open_tenant(client)
        if not isinstance(tenant, Tenant):
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

    async def build_ended(self, client: ClientIdentity, built: list[str]) -> None:
        """A BuildKit Solve ended: its export may be an image no event announces, and
        each tag it built names the job's image (recorded as `docker tag`'s are: job
        close untags it while it still does, label or not), before the client hears
        that the build finished."""
        self.look.images_changed()
        tenant = self.tenant_of(client)
        if isinstance(tenant, Tenant):
            for tag in built:
                await self.look.tagged_now(tenant, normalize_tag(tag))

    # --- answers ------------------------------------------------------------------

    def _tenant(self, request: ApiRequest) -> Tenant | None:
        """The client's tenant once its request was let through (None: no tenancy)."""
        tenant = self.tenant_of(request.client)
        return tenant if isinstance(tenant, Tenant) else None

    def on_json_response(self, ctx: Context, request: ApiRequest, status: int, answer: Any) -> Any:
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

    def on_line(self, ctx: Context, request: ApiRequest, kind: LineKind, line: Any) -> Any:
        """One line of an events stream or of a load's, build's or import's progress,
        through the route's line handler (routes/). An event the tenant may not see, or
        any event on a closed job's or an unreadable stream, is dropped."""
        tenant = self._tenant(request)
        if tenant is None or not isinstance(line, dict):
            return None if kind == "events" else line
        route = entry(request.route.name)
        answer = route.answer
        # A line handler reads its own route's lines only (an event is not a load's
        # progress); a route without an event stream of its own drops events.
        if (
            route.on_line is None
            or (answer if isinstance(answer, str) else answer(request)) != kind
        ):
            return None if kind == "events" else line
        return route.on_line(self.look, request, tenant, ctx, line)
