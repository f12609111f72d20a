"""Tenancy on classic builds: the job's tags, label and network; the shared cache.

A build claims its `-t` tags before it goes upstream (released when it fails),
labels its image as the job's, runs its RUN steps on the job's own network,
and reads only images the job may see (`cachefrom` here; FROM and COPY --from
as the context streams past, `check_sources`). BuildKit builds come through
their session and gRPC calls, bound to their job by the BuildKit layer
(dockmoat.buildkit), which asks `foreign_images` what they must not resolve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dockmoat.api.dockerfile import DockerfileError, image_sources
from dockmoat.api.gojson import compact
from dockmoat.api.request import ApiRequest
from dockmoat.gateway.stages import Context
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.tenancy import notfound, rules
from dockmoat.tenancy import refs as references
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import TENANT_LABEL, Owner, Tenant, normalize_tag, resolve_network
from dockmoat.tenancy.routes.base import Entry, ResponseKind, request_query

BUILD_CACHE_RULE = "tenancy.build-cache"
NO_CACHE_ID = "dockmoat-no-such-cache"


async def build(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    for tag in request.query.get("t", []):
        verdict = await look.claim_tag(tenant, tag)
        if isinstance(verdict, Deny):
            return verdict
    query = request_query(request)
    notes = [f"label {TENANT_LABEL}={tenant.name}"]
    mode = request.param("networkmode") or ""
    if rules.build_network_ref(mode):
        # RUN steps join this network: the tenant's own, by its full id.
        net = resolve_network(mode, await look.owned_networks(tenant), tenant.namespace)
        if net is None:
            return replace(notfound.no_such_network(mode), status=400)
        query["networkmode"] = [net.id]
        notes.append(f"networkmode {mode} -> {net.id[:12]}")
    try:
        cache_refs = rules.cache_from(request.param("cachefrom"))
    except ValueError as error:
        return Deny(references.RULE, f"dockmoat: {references.RULE}: {error}", status=400)
    for ref in cache_refs:
        visible, _ = await look.image_visible(tenant, ref)
        if not visible:
            return notfound.no_such_image(ref)
    raw = request.param("labels")
    labels = json.loads(raw) if raw else {}
    query["labels"] = [compact(rules.with_label(labels, tenant))]
    return Rewrite(rules.RULE, tuple(notes), query=query)


async def prune(look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context) -> Decision:
    # The build cache is shared by every job and owned by none: a job's prune is
    # scoped to nothing (an id no cache has), so `docker system prune` still works.
    query = {k: list(v) for k, v in request.query.items() if k not in ("filters", "all")}
    query["filters"] = [compact({"id": [NO_CACHE_ID]})]
    return Rewrite(BUILD_CACHE_RULE, ("build cache is shared: pruned nothing",), query=query)


def _progress(request: ApiRequest) -> ResponseKind:
    """A build is read line by line: a failure releases its tags' claims, its image
    drops the kept image listing (an untagged build may have no image event on older
    engines)."""
    return "build"


def _build_line(
    look: Lookups, request: ApiRequest, tenant: Tenant, ctx: Context, line: dict[str, Any]
) -> Any:
    # A claim becomes real only with the image; a stale one would make the job's close
    # untag whatever later took the name, and refuse other jobs the name meanwhile.
    if "errorDetail" in line or "error" in line:
        look.release_later(tenant, [normalize_tag(t) for t in request.query.get("t", [])])
    elif "aux" in line:  # the image's id (BuildKit's too: `moby.image.id`)
        look.images_changed()
    return line


async def check_sources(look: Lookups, tenant: Tenant, refs: Sequence[str]) -> Decision:
    """A classic build's FROM and COPY --from images: the job's own or shared ones
    (an image the store lacks is pulled, which the policy decided)."""
    for ref in refs:
        visible, image = await look.image_visible(tenant, ref)
        if not visible:
            return notfound.no_such_image(ref)
        # A base image's ONBUILD triggers run in this build: their COPY --from too
        # (a loaded image's configuration can carry any).
        triggers = ((image or {}).get("Config") or {}).get("OnBuild") or []
        if triggers:
            text = "FROM scratch\n" + "".join(f"ONBUILD {t}\n" for t in triggers)
            try:
                found = image_sources(text, {})
            except DockerfileError as error:
                return Deny(
                    references.RULE,
                    f"dockmoat: {references.RULE}: the ONBUILD triggers of {ref} "
                    f"cannot be read ({error})",
                    status=400,
                )
            for source in found:
                seen, _ = await look.image_visible(tenant, source.ref)
                if not seen:
                    return notfound.no_such_image(source.ref)
    return Allow()


async def foreign_images(look: Lookups, tenant: Tenant) -> tuple[frozenset[str], frozenset[str]]:
    """(tags, image ids) the tenant's BuildKit builds must not resolve: other tenants'
    images and the tags only other tenants made (BuildKit resolves a build's images in
    the daemon's store, where no request of ours sees them)."""
    # Kept while the engine's image events say nothing changed (tenancy/imagewatch.py).
    listing = await look.image_list()
    facts = look.image_facts(tenant)
    tags: set[str] = set()
    ids: set[str] = set()
    for image in listing:
        names = [normalize_tag(str(t)) for t in image.get("RepoTags") or []]
        if facts.image_owner(image) is Owner.FOREIGN:
            ids.add(str(image.get("Id")))
            tags.update(names)
        else:
            tags.update(t for t in names if not facts.tag_visible(t))
    tags.update(t for t, owners in facts.tag_owners.items() if tenant.name not in owners)
    return frozenset(tags), frozenset(ids)


ENTRIES: tuple[Entry, ...] = (
    Entry("build.build", build, answer=_progress, on_line=_build_line),
    Entry("build.prune", prune, inline=True),
)

#: Build ids and sessions are bound to their job by the BuildKit layer, not here
#: (refs.NOT_TENANCY): cancel, the session and BuildKit's gRPC go as they are.
UNTOUCHED: frozenset[str] = frozenset({"build.cancel", "session.session", "grpc.grpc"})
