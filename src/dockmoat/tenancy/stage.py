"""The tenancy stage of the gateway: per request, find out what it refers to, then decide.

Look-ups go to the engine (labels are the first source of truth for
containers, networks and volumes) and to the ownership store (image tags,
exec ids); the decisions themselves are the pure functions of rules.py and
present.py. Any failure to find out is a denial: the gateway turns an
exception here into a Deny (fail closed), and unknown tenants are refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from dockmoat.api.bodies import ArchiveTags
from dockmoat.api.dockerfile import DockerfileError, image_sources
from dockmoat.api.gojson import compact
from dockmoat.api.request import ApiRequest, ClientIdentity, Route
from dockmoat.policy import hostpaths
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite
from dockmoat.policy.rules.containers import create_bind_sources, rebind
from dockmoat.tenancy import notfound, present, rules
from dockmoat.tenancy import refs as references
from dockmoat.tenancy.engine import EngineApi, PooledEngine, Upstream
from dockmoat.tenancy.jsonkeys import get_field, set_field
from dockmoat.tenancy.model import (
    PREDEFINED_NETWORKS,
    TENANT_LABEL,
    ContainerFact,
    ImageFacts,
    NetworkFact,
    Owner,
    Tenant,
    looks_like_image_id,
    normalize_tag,
    resolve_container,
    resolve_network,
)
from dockmoat.tenancy.store import OwnershipStore

ResponseKind = Literal["json", "events", "load", "build", "none"]

#: Routes that claim the tag `repo` (and `tag`) name before they go upstream.
_TAG_CLAIMING = frozenset({"images.tag", "images.commit"})


def _claimed_tag(request: ApiRequest) -> str:
    """The tag `repo` and `tag` set (tag, commit, import), as claims record it."""
    return normalize_tag(rules.effective_tag(request.param("repo") or "", request.param("tag")))


_JSON_RESPONSES = frozenset(
    {
        "containers.list",
        "containers.inspect",
        "containers.create",
        "containers.exec",
        "containers.delete",
        "volumes.list",
        "volumes.inspect",
        "volumes.create",
        "networks.list",
        "networks.inspect",
        "networks.create",
        "images.list",
        "images.inspect",
        "images.delete",
        "images.tag",
        "system.df",
    }
)

# Handlers that only rewrite the query (no look-up): the gateway may run them inline.
_INLINE_HANDLERS = frozenset(
    {
        "containers.list",
        "containers.prune",
        "volumes.prune",
        "networks.prune",
        "images.prune",
        "build.prune",
        "system.events",
    }
)

_BODY_ROUTES = frozenset(
    {
        "containers.create",
        "images.commit",
        "containers.update",
        "volumes.create",
        "networks.create",
        "networks.connect",
        "networks.disconnect",
    }
)
_MAX_LOAD_SNAPSHOTS = 256
_RESTORES_AT_ONCE = 4
log = logging.getLogger("dockmoat.tenancy")


@dataclass(frozen=True)
class LoadSnapshot:
    """The engine's images just before a job's `docker load`."""

    tags: dict[str, str]  # normalized tag -> image id
    ids: frozenset[str]


SHARED_IMAGE_RULE = "tenancy.shared-image"
TAG_RULE = "tenancy.image-tag"
BUILD_CACHE_RULE = "tenancy.build-cache"
LOAD_FORMAT_RULE = "tenancy.load-format"
NO_CACHE_ID = "dockmoat-no-such-cache"


def daemon_sockets(upstream: Path | None) -> frozenset[str]:
    """The daemon's socket in every spelling a bind source resolves to."""
    paths = ["/var/run/docker.sock", "/run/docker.sock"]
    if upstream is not None:
        paths.append(str(upstream))
    return frozenset(_resolved(path) for path in paths) - {""}


def _resolved(path: str) -> str:
    try:
        return hostpaths.resolve(path)
    except OSError:
        return ""


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
        # A job container that binds the Docker socket gets its job's socket instead.
        self._socket_of = socket_of
        self._daemon_sockets = daemon_sockets
        # Inside the gateway, look-ups use its pooled upstream (known at the first request).
        self._engine = engine
        # Tags (-> image id) and image ids present before each `docker load` (keyed
        # by request), bounded.
        self._load_snapshots: OrderedDict[int, LoadSnapshot] = OrderedDict()
        # Restores of tags a load moved (see `on_load_message`) and releases of a failed
        # build's claims, kept referenced; restores a few at a time.
        self._restores: set[asyncio.Task[None]] = set()
        self._restoring: asyncio.Semaphore | None = None  # made in the serving loop

    # --- look-ups ---------------------------------------------------------------

    @property
    def engine(self) -> EngineApi:
        if self._engine is None:
            raise RuntimeError("the tenancy stage has no engine yet")
        return self._engine

    async def _owned_containers(self, tenant: Tenant) -> list[ContainerFact]:
        status, answer = await self.engine.call(
            "GET",
            "/containers/json",
            {"all": "1", "filters": {"label": [f"{TENANT_LABEL}={tenant.name}"]}},
        )
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list the containers of {tenant.name}: {status}")
        return [ContainerFact.from_list_entry(e) for e in answer if isinstance(e, dict)]

    async def _owned_networks(self, tenant: Tenant) -> list[NetworkFact]:
        status, answer = await self.engine.call(
            "GET", "/networks", {"filters": {"label": [f"{TENANT_LABEL}={tenant.name}"]}}
        )
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list the networks of {tenant.name}: {status}")
        return [NetworkFact.from_list_entry(e) for e in answer if isinstance(e, dict)]

    async def _volume(self, tenant: Tenant, ref: str) -> str | None:
        """The engine name of the tenant's volume `ref`, or None."""
        recorded = set(self.store.owned(tenant.name, "volume"))
        for candidate in (tenant.namespace.engine_name(ref), ref):
            status, answer = await self.engine.call("GET", f"/volumes/{candidate}")
            if (
                status == 200
                and isinstance(answer, dict)
                and present.volume_mine(answer, tenant, frozenset(recorded))
            ):
                return str(answer.get("Name", candidate))
        return None

    def image_facts(self, tenant: Tenant) -> ImageFacts:
        return ImageFacts(
            tenant=tenant.name,
            id_owners={k: frozenset(v) for k, v in self.store.all_owned("image").items()},
            tag_owners={k: frozenset(v) for k, v in self.store.all_owned("tag").items()},
        )

    async def _image(self, ref: str) -> dict[str, Any] | None:
        status, answer = await self.engine.call("GET", f"/images/{ref}/json")
        return answer if status == 200 and isinstance(answer, dict) else None

    async def _image_visible(self, tenant: Tenant, ref: str) -> tuple[bool, dict[str, Any] | None]:
        """(visible?, inspect) of an image reference.

        A missing image counts as visible: dockerd answers its own 404."""
        image = await self._image(ref)
        if image is None:
            return True, None
        facts = self.image_facts(tenant)
        if not looks_like_image_id(ref) and not facts.tag_visible(normalize_tag(ref)):
            return False, image
        return facts.image_owner(image) is not Owner.FOREIGN, image

    async def _claim_tag(self, tenant: Tenant, tag: str) -> Decision:
        """A tag the tenant wants to set (build, tag, commit, pull): free or its own."""
        tag = normalize_tag(tag)
        facts = self.image_facts(tenant)
        if facts.tag_mine(tag):
            return Allow()
        if await self._image(tag) is not None or facts.tag_owners.get(tag):
            return Deny(
                TAG_RULE,
                f"dockmoat: {TAG_RULE}: the tag {tag} is in use outside job {tenant.name} "
                "(shared images and other jobs' tags cannot be retagged). Choose another name.",
            )
        self.store.add(tenant.name, "tag", tag)
        return Allow()

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
        return await self._claim_tag(tenant, tag)

    async def release_build_tags(self, client: ClientIdentity, tags: list[str]) -> None:
        """A BuildKit build failed: the tags it claimed go where no image carries them."""
        tenant = self.tenant_of(client)
        if tenant is not None and not isinstance(tenant, Deny):
            await self._release_unbuilt(tenant, [normalize_tag(tag) for tag in tags])

    # --- references read from streamed bodies (api/bodies.py) ------------------

    async def check_build_sources(self, request: ApiRequest, refs: Sequence[str]) -> Decision:
        """A classic build's FROM and COPY --from images: the job's own or shared ones
        (an image the store lacks is pulled, which the policy decided)."""
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        for ref in refs:
            visible, image = await self._image_visible(tenant, ref)
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
                    seen, _ = await self._image_visible(tenant, source.ref)
                    if not seen:
                        return notfound.no_such_image(source.ref)
        return Allow()

    async def check_archive_tags(self, request: ApiRequest, archive: ArchiveTags) -> Decision:
        """The tags a job's `docker load` sets: free, the job's own, or naming the very
        image they name already (a save/load cache). A legacy tarball is refused: dockerd
        reports none of the tags it sets, so they could be neither claimed nor undone."""
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        if archive.legacy:
            return Deny(
                LOAD_FORMAT_RULE,
                f"dockmoat: {LOAD_FORMAT_RULE}: this image tarball has the legacy format "
                "(a repositories file and no manifest.json), whose tags dockerd sets "
                "without reporting them, so they cannot be kept to your job. Save the "
                "image again with a current docker save.",
            )
        facts = self.image_facts(tenant)
        named = {normalize_tag(tag) for tag, _ in archive.tags}
        # An OCI index's names count where manifest.json does not name the same tag
        # (the tag is then set from the manifest; an engine with the containerd image
        # store reads the index's).
        extra = [(t, i) for t, i in archive.index_names if normalize_tag(t) not in named]
        for raw, image_id in (*archive.tags, *extra):
            tag = normalize_tag(raw)
            if facts.tag_mine(tag):
                continue
            existing = await self._image(tag)
            if existing is None and not facts.tag_owners.get(tag):
                continue  # free: the load's report claims it for the job
            if existing is not None and image_id is not None and existing.get("Id") == image_id:
                continue  # the same image again: nothing moves
            return Deny(
                TAG_RULE,
                f"dockmoat: {TAG_RULE}: the tag {tag} is in use outside job {tenant.name} "
                "(the load would move it). Save the image under another name.",
            )
        return Allow()

    async def foreign_images(self, client: ClientIdentity) -> tuple[frozenset[str], frozenset[str]]:
        """(tags, image ids) this client's builds must not resolve: other tenants' images
        and the tags only other tenants made (BuildKit resolves a build's images in the
        daemon's store, where no request of ours sees them)."""
        tenant = self.tenant_of(client)
        if tenant is None or isinstance(tenant, Deny):
            return frozenset(), frozenset()
        status, answer = await self.engine.call("GET", "/images/json")
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list images for a build: {status}")
        facts = self.image_facts(tenant)
        tags: set[str] = set()
        ids: set[str] = set()
        for image in answer:
            if not isinstance(image, dict):
                continue
            names = [normalize_tag(str(t)) for t in image.get("RepoTags") or []]
            if facts.image_owner(image) is Owner.FOREIGN:
                ids.add(str(image.get("Id")))
                tags.update(names)
            else:
                tags.update(t for t in names if not facts.tag_visible(t))
        tags.update(t for t, owners in facts.tag_owners.items() if tenant.name not in owners)
        return frozenset(tags), frozenset(ids)

    def body_needed(self, route: Route) -> bool:
        """Whether the stage reads the JSON body of this route (buffered by the gateway)."""
        return route.name in _BODY_ROUTES

    async def on_request(self, request: ApiRequest, upstream: Upstream) -> Decision:
        if self._engine is None:
            self._engine = PooledEngine(upstream)
        tenant = self.tenant_of(request.client)
        if tenant is None:
            return Allow()
        if isinstance(tenant, Deny):
            return tenant
        item = references.unresolved(request)
        if item is not None:
            return references.refusal(request, item)
        route = request.route.name
        if route in rules.CONTAINER_ROUTES:
            return await self._container_route(request, tenant)
        handler = self._handlers.get(route)
        if handler is not None:
            return await handler(self, request, tenant)
        return Allow()

    async def _container_route(self, request: ApiRequest, tenant: Tenant) -> Decision:
        ref = request.route.params.get("name", "")
        fact = resolve_container(ref, await self._owned_containers(tenant), tenant.namespace)
        if fact is None:
            return notfound.no_such_container(ref)
        route = request.route.name
        query = {k: list(v) for k, v in request.query.items()}
        notes = [f"container {ref} -> {fact.id[:12]}"]
        body = None
        if route == "containers.rename":
            new = request.param("name")
            if new:
                query["name"] = [tenant.namespace.engine_name(new)]
        elif route == "containers.start" and not fact.running:
            running = sum(1 for c in await self._owned_containers(tenant) if c.running)
            verdict = rules.check_running_quota(tenant, running)
            if isinstance(verdict, Deny):
                return verdict
        elif route == "containers.update":
            decision = await self._memory_quota(tenant, request.body_json, exclude=fact.id)
            if isinstance(decision, Deny):
                return decision
        path = rules.replace_path_param(request.path, "containers", ref, fact.id)
        return Rewrite(rules.RULE, tuple(notes), body_json=body, query=query, path=path)

    async def _memory_quota(self, tenant: Tenant, body: Any, exclude: str | None) -> Decision:
        if tenant.quotas.memory_bytes is None:
            return Allow()
        current: list[int] = []
        for fact in await self._owned_containers(tenant):
            if fact.id == exclude:
                continue
            status, answer = await self.engine.call("GET", f"/containers/{fact.id}/json")
            if status == 200:
                current.append(int(get_field(answer.get("HostConfig"), "Memory") or 0))
        return rules.check_memory_quota(tenant, current, rules.memory_of(body))

    async def _create(self, request: ApiRequest, tenant: Tenant) -> Decision:
        body = request.body_json if isinstance(request.body_json, dict) else {}
        image = get_field(body, "Image")
        if isinstance(image, str) and image:
            visible, _ = await self._image_visible(tenant, image)
            if not visible:
                return notfound.no_such_image(image)
        refs = rules.create_refs(body)
        containers = await self._owned_containers(tenant) if refs.containers else []
        networks = await self._owned_networks(tenant) if refs.networks or refs.network_ids else []
        resolved_ids: dict[str, str] = {}
        resolved_names: dict[str, str] = {}
        for ref in refs.containers:
            fact = resolve_container(ref, containers, tenant.namespace)
            if fact is not None:
                resolved_ids[ref] = fact.id
                resolved_names[ref] = fact.names[0].lstrip("/") if fact.names else fact.id
        resolved_nets: dict[str, str] = {}
        for ref in refs.networks:
            net = resolve_network(ref, networks, tenant.namespace)
            if net is not None:
                resolved_nets[ref] = net.name
        network_ids: dict[str, str] = {}
        for ref in refs.network_ids:
            net = resolve_network(ref, networks, tenant.namespace)
            if net is not None:
                network_ids[ref] = net.id
        decision = await self._memory_quota(tenant, body, exclude=None)
        if isinstance(decision, Deny):
            return decision
        for ref in _volume_names(body):
            self.store.add(tenant.name, "volume", tenant.namespace.engine_name(ref))
        decision = rules.rewrite_create(
            body,
            request.query,
            tenant,
            rules.Resolved(resolved_ids, resolved_names, resolved_nets, network_ids),
        )
        return self._scoped_docker_socket(decision, tenant)

    def _scoped_docker_socket(self, decision: Decision, tenant: Tenant) -> Decision:
        """A bind of the daemon's socket becomes a bind of the job's own socket: tools
        that drive Docker from a container (testcontainers' Ryuk, CI helpers) then work
        under the job's policy and tenancy, seeing only the job's things. Listener
        tenants have no socket of their own: the policy refuses the bind as before."""
        if not isinstance(decision, Rewrite) or not isinstance(decision.body_json, dict):
            return decision
        own = self._socket_of(tenant.name) if self._socket_of is not None else None
        if own is None or not self._daemon_sockets:
            return decision
        sources = {
            source: own
            for source, _where in create_bind_sources(decision.body_json)
            if _resolved(source) in self._daemon_sockets
        }
        if not sources:
            return decision
        return replace(
            decision,
            body_json=rebind(decision.body_json, sources),
            notes=(*decision.notes, f"docker socket -> the job's socket {own}"),
        )

    async def _container_list(self, request: ApiRequest, tenant: Tenant) -> Decision:
        # `since`/`before` name a container dockerd looks up among all of them: a foreign
        # one would answer an empty list where a missing one answers 404 (an oracle).
        filters = rules.decode_filters(request.query)
        moved: dict[str, list[str]] = {}
        if any(key in filters for key in rules.ORDER_FILTERS):
            owned = await self._owned_containers(tenant)
            for key in rules.ORDER_FILTERS:
                for ref in filters.get(key, []):
                    fact = resolve_container(ref, owned, tenant.namespace)
                    if fact is None:
                        return notfound.no_such_container(ref)
                    moved.setdefault(key, []).append(fact.id)
        query = rules.scoped_query(
            request.query,
            tenant,
            name_filters=True,
            ref_filters={
                "network": tenant.namespace.engine_name,
                "volume": tenant.namespace.engine_name,
            },
        )
        if moved:
            query = rules.with_filters(query, moved)
        return Rewrite(rules.RULE, (f"scoped to {tenant.name}",), query=query)

    async def _image_list(self, request: ApiRequest, tenant: Tenant) -> Decision:
        """`since`/`before`/`reference`-free image filters pass; `since`/`before` naming an
        image the tenant cannot see answer as for a missing one (not an empty list)."""
        filters = rules.decode_filters(request.query)
        for key in rules.ORDER_FILTERS:
            for ref in filters.get(key, []):
                visible, image = await self._image_visible(tenant, ref)
                if not visible or image is None:
                    return notfound.no_such_image(ref)
        return Allow()

    async def _prune(self, request: ApiRequest, tenant: Tenant) -> Decision:
        query = rules.scoped_query(request.query, tenant)
        return Rewrite(rules.RULE, (f"prune scoped to {tenant.name}",), query=query)

    async def _exec(self, request: ApiRequest, tenant: Tenant) -> Decision:
        params = request.route.params
        ref = params.get("id") or params.get("name") or ""
        status, answer = await self.engine.call("GET", f"/exec/{ref}/json")
        if status != 200 or not isinstance(answer, dict):
            return notfound.no_such_exec(ref)
        owned = {c.id for c in await self._owned_containers(tenant)}
        if answer.get("ContainerID") not in owned:
            return notfound.no_such_exec(ref)
        return Allow()

    async def _volume_ref(self, request: ApiRequest, tenant: Tenant) -> Decision:
        ref = request.route.params.get("name", "")
        engine_name = await self._volume(tenant, ref)
        if engine_name is None:
            return notfound.no_such_volume(ref)
        path = rules.replace_path_param(request.path, "volumes", ref, engine_name)
        return Rewrite(rules.RULE, (f"volume {ref} -> {engine_name}",), path=path)

    async def _volume_create(self, request: ApiRequest, tenant: Tenant) -> Decision:
        if tenant.quotas.volumes is not None:
            _, answer = await self.engine.call("GET", "/volumes")
            volumes = answer.get("Volumes") if isinstance(answer, dict) else None
            recorded = frozenset(self.store.owned(tenant.name, "volume"))
            mine = [v for v in volumes or [] if present.volume_mine(v, tenant, recorded)]
            verdict = rules.check_volume_quota(tenant, len(mine))
            if isinstance(verdict, Deny):
                return verdict
        decision = rules.rewrite_volume_create(request.body_json, tenant)
        name = get_field(decision.body_json, "Name")
        if isinstance(name, str) and name:
            self.store.add(tenant.name, "volume", name)
        return decision

    async def _network_ref(self, request: ApiRequest, tenant: Tenant) -> Decision:
        ref = request.route.params.get("id", "")
        route = request.route.name
        if ref in PREDEFINED_NETWORKS and route != "networks.delete":
            net_name = ref
        else:
            net = resolve_network(ref, await self._owned_networks(tenant), tenant.namespace)
            if net is None:
                return notfound.no_such_network(ref)
            net_name = net.id
        path = rules.replace_path_param(request.path, "networks", ref, net_name)
        body = None
        if route in ("networks.connect", "networks.disconnect"):
            body = dict(request.body_json) if isinstance(request.body_json, dict) else {}
            container = get_field(body, "Container")
            fact = resolve_container(
                str(container or ""), await self._owned_containers(tenant), tenant.namespace
            )
            if fact is None:
                return notfound.no_such_container(str(container or ""))
            set_field(body, "Container", fact.id)
            endpoint = get_field(body, "EndpointConfig")
            network_id = rules.endpoint_network_id(endpoint)
            if network_id:
                # dockerd may attach by the endpoint's NetworkID: it must name the same
                # network as the path, resolved in the tenant's name space.
                owned_nets = await self._owned_networks(tenant)
                named = resolve_network(network_id, owned_nets, tenant.namespace)
                if named is None or named.id != net_name:
                    return notfound.no_such_network(network_id)
                endpoint = rules.rewrite_endpoint_network_id(endpoint, {network_id: named.id})
                set_field(body, "EndpointConfig", endpoint)
            refs = rules.endpoint_link_refs(endpoint)
            if refs:
                owned = await self._owned_containers(tenant)
                names: dict[str, str] = {}
                for ref in refs:
                    linked = resolve_container(ref, owned, tenant.namespace)
                    if linked is None:
                        return notfound.no_such_container(ref)
                    names[ref] = linked.names[0].lstrip("/") if linked.names else linked.id
                set_field(body, "EndpointConfig", rules.rewrite_endpoint_links(endpoint, names))
        return Rewrite(
            rules.RULE, (f"network {ref} -> {net_name[:12]}",), body_json=body, path=path
        )

    async def _network_create(self, request: ApiRequest, tenant: Tenant) -> Decision:
        decision = rules.rewrite_network_create(request.body_json, tenant)
        if isinstance(decision, Rewrite):
            self.store.add(tenant.name, "network", str(get_field(decision.body_json, "Name")))
        return decision

    async def _image_ref(self, request: ApiRequest, tenant: Tenant) -> Decision:
        ref = request.route.params.get("name", "")
        route = request.route.name
        visible, image = await self._image_visible(tenant, ref)
        if not visible:
            return notfound.no_such_image(ref, inspect=route == "images.inspect")
        if image is None:
            return Allow()
        facts = self.image_facts(tenant)
        if route == "images.delete":
            owner = facts.image_owner(image)
            is_tag = not looks_like_image_id(ref)
            if is_tag and facts.tag_mine(normalize_tag(ref)):
                return Allow()
            if owner is not Owner.MINE:
                return Deny(
                    SHARED_IMAGE_RULE,
                    f"dockmoat: {SHARED_IMAGE_RULE}: {ref} is a shared image; jobs may use it "
                    "but not remove it. Remove only the tags and images your job made.",
                )
            others = [t for t in image.get("RepoTags") or [] if not facts.tag_mine(str(t))]
            if others and not is_tag:
                return Deny(
                    SHARED_IMAGE_RULE,
                    f"dockmoat: {SHARED_IMAGE_RULE}: {ref} carries tags your job did not make; "
                    "remove it by your own tag instead.",
                )
        if route == "images.tag" and request.param("repo"):
            return await self._claim_tag(tenant, _claimed_tag(request))
        return Allow()

    async def _images_get_all(self, request: ApiRequest, tenant: Tenant) -> Decision:
        for ref in request.query.get("names", []):
            visible, _ = await self._image_visible(tenant, ref)
            if not visible:
                return notfound.no_such_image(ref)
        return Allow()

    async def _build(self, request: ApiRequest, tenant: Tenant) -> Decision:
        for tag in request.query.get("t", []):
            verdict = await self._claim_tag(tenant, tag)
            if isinstance(verdict, Deny):
                return verdict
        query = {k: list(v) for k, v in request.query.items()}
        notes = [f"label {TENANT_LABEL}={tenant.name}"]
        mode = request.param("networkmode") or ""
        if rules.build_network_ref(mode):
            # RUN steps join this network: the tenant's own, by its full id.
            net = resolve_network(mode, await self._owned_networks(tenant), tenant.namespace)
            if net is None:
                return replace(notfound.no_such_network(mode), status=400)
            query["networkmode"] = [net.id]
            notes.append(f"networkmode {mode} -> {net.id[:12]}")
        try:
            cache_refs = rules.cache_from(request.param("cachefrom"))
        except ValueError as error:
            return Deny(references.RULE, f"dockmoat: {references.RULE}: {error}", status=400)
        for ref in cache_refs:
            visible, _ = await self._image_visible(tenant, ref)
            if not visible:
                return notfound.no_such_image(ref)
        raw = request.param("labels")
        labels = json.loads(raw) if raw else {}
        query["labels"] = [compact(rules.with_label(labels, tenant))]
        return Rewrite(rules.RULE, tuple(notes), query=query)

    async def _events(self, request: ApiRequest, tenant: Tenant) -> Decision:
        query = rules.events_query(request.query, tenant)
        if query is None:
            return Allow()
        return Rewrite(rules.RULE, ("event filters in the job's name space",), query=query)

    async def _build_prune(self, request: ApiRequest, tenant: Tenant) -> Decision:
        # The build cache is shared by every job and owned by none: a job's prune is
        # scoped to nothing (an id no cache has), so `docker system prune` still works.
        query = {k: list(v) for k, v in request.query.items() if k not in ("filters", "all")}
        query["filters"] = [compact({"id": [NO_CACHE_ID]})]
        return Rewrite(BUILD_CACHE_RULE, ("build cache is shared: pruned nothing",), query=query)

    async def _commit(self, request: ApiRequest, tenant: Tenant) -> Decision:
        ref = request.param("container") or ""
        fact = resolve_container(ref, await self._owned_containers(tenant), tenant.namespace)
        if fact is None:
            return notfound.no_such_container(ref)
        repo = request.param("repo")
        if repo:
            verdict = await self._claim_tag(tenant, _claimed_tag(request))
            if isinstance(verdict, Deny):
                return verdict
        query = {k: list(v) for k, v in request.query.items()}
        query["container"] = [fact.id]
        # The image is the job's: a Dockerfile-style `--change LABEL` cannot say otherwise
        # (the last change wins), nor can the config in the body.
        query["changes"] = [*query.get("changes", []), f"LABEL {TENANT_LABEL}={tenant.name}"]
        problem = rules.changes_problem(query["changes"], tenant)
        if problem is not None:
            return problem
        body = request.body_json
        if isinstance(body, dict):
            body = dict(body)
            set_field(body, "Labels", rules.with_label(get_field(body, "Labels"), tenant))
        return Rewrite(
            rules.RULE,
            (f"container {ref} -> {fact.id[:12]}", f"label {TENANT_LABEL}={tenant.name}"),
            query=query,
            body_json=body,
        )

    async def _image_create(self, request: ApiRequest, tenant: Tenant) -> Decision:
        tag = request.param("tag")
        pulled = request.param("fromImage")
        if pulled:
            name = (
                pulled if "@" in pulled or "@" in (tag or "") else rules.effective_tag(pulled, tag)
            )
            owners = self.image_facts(tenant).tag_owners.get(normalize_tag(name))
            if owners and tenant.name not in owners:
                # The pull would move another job's tag to the registry's image.
                return Deny(
                    TAG_RULE,
                    f"dockmoat: {TAG_RULE}: the tag {normalize_tag(name)} is in use outside job "
                    f"{tenant.name} (a pull would move it). Pull it under another name.",
                )
            # A pulled image is shared read-only, as base images are: nothing is claimed.
            # (A claim made before the pull outlived a failed pull, and then hid the image
            # from every other job once it existed: two jobs pulling one base image broke.)
            return Allow()
        repo = request.param("repo")
        changes = request.query.get("changes", [])
        if changes:
            # An import's changes carry no owner label of ours: checked without one.
            problem = rules.changes_problem(
                [*changes, f"LABEL {TENANT_LABEL}={tenant.name}"], tenant
            )
            if problem is not None:
                return problem
        if request.param("fromSrc") and repo:
            return await self._claim_tag(tenant, _claimed_tag(request))
        return Allow()

    async def _image_load(self, request: ApiRequest, tenant: Tenant) -> Decision:
        # Tags that exist before the load are not the job's, even if the load retags them.
        status, answer = await self.engine.call("GET", "/images/json")
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list images before a load: {status}")
        tags = {
            normalize_tag(str(t)): str(image.get("Id"))
            for image in answer for t in image.get("RepoTags") or []
        }  # fmt: skip
        ids = frozenset(str(image.get("Id")) for image in answer)
        self._load_snapshots[id(request)] = LoadSnapshot(tags, ids)
        while len(self._load_snapshots) > _MAX_LOAD_SNAPSHOTS:
            self._load_snapshots.popitem(last=False)
        return Allow()

    async def _restore_tag(self, tenant: Tenant, tag: str, before: LoadSnapshot) -> None:
        """Set a tag a job's load moved back to the image it named before the load.

        The tags are inside the tarball, so the load cannot be refused beforehand;
        between dockerd's retag and this the tag names the job's image (a few
        milliseconds; docs/tenancy.md, known limits). The loaded image becomes
        the job's unless it existed before.
        """
        previous = before.tags[tag]
        image = await self._image(tag)
        loaded = str(image.get("Id")) if image is not None else None
        if loaded == previous:
            return  # the same image loaded again (a save/load cache): nothing moved
        repo, _, name = tag.rpartition(":")
        status, _ = await self.engine.call(
            "POST", f"/images/{previous}/tag", {"repo": repo, "tag": name}
        )
        if status >= 300:
            log.error("tenancy: could not set %s back to %s after a load by job %s "
                      "(HTTP %d)", tag, previous[:19], tenant.name, status)  # fmt: skip
            return
        if loaded is not None and loaded not in before.ids:
            self.store.add(tenant.name, "image", loaded)
        log.warning("tenancy: a load by job %s retagged %s, which is in use outside the "
                    "job; set back to %s", tenant.name, tag, previous[:19])  # fmt: skip

    def _spawn_restore(self, tenant: Tenant, tag: str, before: LoadSnapshot) -> None:
        if self._restoring is None:
            self._restoring = asyncio.Semaphore(_RESTORES_AT_ONCE)
        restoring = self._restoring

        async def restore() -> None:
            async with restoring:
                await self._restore_tag(tenant, tag, before)

        self._spawn_tracked(restore(), f"restoring {tag} after a load by job {tenant.name}")

    def on_build_message(self, request: ApiRequest, message: Any) -> Any:
        """A classic build's (or an import's) progress: when it fails, the tags it
        claimed before it went upstream are released where no image carries them (a
        claim becomes real only with the image; a stale one would make the job's close
        untag whatever later took the name, and refuse other jobs the name meanwhile).
        An import's image, reported by its last line, is recorded as the job's."""
        tenant = self._tenant(request)
        if tenant is None or not isinstance(message, dict):
            return message
        status = message.get("status")
        if "errorDetail" in message or "error" in message:
            if request.route.name == "images.create":
                self._release_later(tenant, [_claimed_tag(request)])
            else:
                self._release_later(tenant, [normalize_tag(t) for t in request.query.get("t", [])])
        elif (
            request.route.name == "images.create"
            and isinstance(status, str)
            and status.startswith("sha256:")
        ):  # the import's last line: its image
            self.store.add(tenant.name, "image", status.strip())
        return message

    def _release_later(self, tenant: Tenant, tags: list[str]) -> None:
        """A failed request's claims go (where no image carries them) once looked up."""
        if tags:
            self._spawn_tracked(
                self._release_unbuilt(tenant, tags),
                f"releasing {', '.join(tags)[:200]} of job {tenant.name}",
            )

    def _record_tagged(self, tenant: Tenant, tag: str) -> None:
        """Remember which image a job's tag was made on (its close untags it only while
        it still names that image, or one the job made)."""

        async def record() -> None:
            image = await self._image(tag)
            if image is not None and self.image_facts(tenant).tag_mine(tag):
                self.store.add(tenant.name, "tagged", f"{tag}={image.get('Id')}")

        self._spawn_tracked(record(), f"recording {tag} of job {tenant.name}")

    async def _release_unbuilt(self, tenant: Tenant, tags: list[str]) -> None:
        for tag in tags:
            if await self._image(tag) is None:
                self.store.discard(tenant.name, "tag", tag)
                log.info("tenancy: job %s's request failed; released its claim on %s",
                         tenant.name, tag)  # fmt: skip

    def _spawn_tracked(self, work: Coroutine[Any, Any, None], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("tenancy: %s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._restores.add(task)
        task.add_done_callback(self._restores.discard)

    _handlers: Mapping[str, Callable[[TenancyStage, ApiRequest, Tenant], Awaitable[Decision]]] = {
        "containers.create": _create,
        "containers.list": _container_list,
        "images.list": _image_list,
        "containers.prune": _prune,
        "volumes.prune": _prune,
        "networks.prune": _prune,
        "images.prune": _prune,
        "exec.inspect": _exec,
        "exec.start": _exec,
        "exec.resize": _exec,
        "volumes.inspect": _volume_ref,
        "volumes.update": _volume_ref,
        "volumes.delete": _volume_ref,
        "volumes.create": _volume_create,
        "networks.inspect": _network_ref,
        "networks.delete": _network_ref,
        "networks.connect": _network_ref,
        "networks.disconnect": _network_ref,
        "networks.create": _network_create,
        "images.inspect": _image_ref,
        "images.history": _image_ref,
        "images.get": _image_ref,
        "images.push": _image_ref,
        "images.tag": _image_ref,
        "images.delete": _image_ref,
        "images.get_all": _images_get_all,
        "build.build": _build,
        "build.prune": _build_prune,
        "system.events": _events,
        "images.commit": _commit,
        "images.create": _image_create,
        "images.load": _image_load,
    }

    def decides_inline(self, request: ApiRequest) -> bool:
        """Whether `on_request` decides this request without looking anything up.

        The gateway's fast lane runs such decisions from a read callback; requests
        whose route has a handler here (they resolve names, read ownership) go the
        ordinary way.
        """
        tenant = self.tenant_of(request.client)
        if not isinstance(tenant, Tenant):
            return True  # no tenancy (Allow) or a closed job (Deny): nothing to look up
        route = request.route.name
        if route in ("containers.list", "images.list"):
            # since/before filters are looked up (an existing foreign object must
            # answer as a missing one); the query alone says whether there are any.
            return not rules.has_order_filters(request.query)
        if route in _INLINE_HANDLERS:
            return True
        return route not in rules.CONTAINER_ROUTES and route not in self._handlers

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

    # --- responses --------------------------------------------------------------

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
        route = request.route.name
        if route in _JSON_RESPONSES:
            return "json"
        if route in ("system.events", "containers.stats"):
            return "events"  # line-delimited JSON, each line through on_event
        if route == "images.load":
            return "load"
        if route == "build.build" and request.query.get("t"):
            return "build"  # each progress line through on_build_message
        if route == "images.create" and request.param("fromSrc") and request.param("repo"):
            return "build"  # an import: its progress lines too
        return "none"

    def rewrites_errors(self, request: ApiRequest) -> bool:
        """Error answers on a tenant's listener come back through `on_json_response`."""
        return self._isolated(request)

    def on_json_response(self, request: ApiRequest, status: int, answer: Any) -> Any:
        """The buffered JSON answer as the tenant reads it (and what it records)."""
        tenant = self._tenant(request)
        if tenant is None:
            return answer
        route = request.route.name
        if status >= 400:
            if route in _TAG_CLAIMING and request.param("repo"):
                # The claim made for this request becomes real only with the image.
                self._release_later(tenant, [_claimed_tag(request)])
            return present.present_error(answer, tenant)
        if not 200 <= status < 300:
            return answer
        if route == "containers.create" and isinstance(answer, dict):
            self.store.add(tenant.name, "container", str(answer.get("Id", "")))
        elif route == "containers.exec" and isinstance(answer, dict):
            self.store.add(tenant.name, "exec", str(answer.get("Id", "")))
        elif route == "networks.create" and isinstance(answer, dict):
            self.store.add(tenant.name, "network", str(answer.get("Id", "")))
        elif route == "images.delete":
            ref = request.route.params.get("name", "")
            self.store.discard(tenant.name, "tag", normalize_tag(ref))
        elif route in _TAG_CLAIMING and request.param("repo"):
            self._record_tagged(tenant, _claimed_tag(request))
        elif route == "containers.list":
            return present.present_container_list(answer, tenant)
        elif route == "containers.inspect" and isinstance(answer, dict):
            return present.present_container(answer, tenant)
        elif route == "volumes.list":
            recorded = frozenset(self.store.owned(tenant.name, "volume"))
            return present.present_volume_list(answer, tenant, recorded)
        elif route in ("volumes.inspect", "volumes.create") and isinstance(answer, dict):
            return present.present_volume(answer, tenant)
        elif route == "networks.list":
            return present.present_network_list(answer, tenant)
        elif route == "networks.inspect" and isinstance(answer, dict):
            return present.present_network(answer, tenant)
        elif route == "images.list":
            return present.present_image_list(answer, self.image_facts(tenant))
        elif route == "images.inspect" and isinstance(answer, dict):
            return present.present_image(answer, self.image_facts(tenant))
        elif route == "system.df":
            return present.present_df(answer, tenant, self.image_facts(tenant))
        return answer

    def on_event(self, request: ApiRequest, event: Any) -> Any:
        """One event of the stream as the tenant sees it, or None to drop it."""
        tenant = self._tenant(request)
        if tenant is None or not isinstance(event, dict):
            return None
        if request.route.name == "containers.stats":
            return present.present_stats(event, tenant)
        return present.present_event(event, tenant, self.image_facts(tenant))

    def on_load_message(self, request: ApiRequest, message: Any) -> Any:
        """`docker load` progress: record the tags it loaded (they are the job's to
        remove), and set back those it moved that were not the job's."""
        tenant = self._tenant(request)
        if tenant is not None and isinstance(message, dict):
            stream = message.get("stream")
            before = self._load_snapshots.get(id(request), None)
            if isinstance(stream, str) and stream.startswith("Loaded image: "):
                tag = normalize_tag(stream.split(": ", 1)[1].strip())
                # Unknown snapshot (should not happen): claim nothing rather than a shared tag.
                if before is not None and tag not in before.tags:
                    self.store.add(tenant.name, "tag", tag)
                    self._record_tagged(tenant, tag)
                elif before is not None and not self.image_facts(tenant).tag_mine(tag):
                    self._spawn_restore(tenant, tag, before)
            elif isinstance(stream, str) and stream.startswith("Loaded image ID: "):
                image_id = stream.split(": ", 1)[1].strip()
                if before is not None and image_id not in before.ids:
                    self.store.add(tenant.name, "image", image_id)
        return message


def _volume_names(body: Any) -> list[str]:
    """Named volumes a create body mounts (implicitly created volumes become the job's)."""
    names: list[str] = []
    host = get_field(body, "HostConfig")
    for bind in get_field(host, "Binds") or ():
        if isinstance(bind, str) and ":" in bind and not bind.startswith("/"):
            names.append(bind.split(":", 1)[0])
    for mount in get_field(host, "Mounts") or ():
        if get_field(mount, "Type") == "volume":
            source = get_field(mount, "Source")
            if isinstance(source, str) and source:
                names.append(source)
    return names
